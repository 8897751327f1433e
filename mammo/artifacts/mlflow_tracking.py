"""``logger=mlflow``: Lightning's ``MLFlowLogger``, with what a mammo run adds to its MLflow run.

Imported only when the config names it (Hydra imports a ``_target_`` as it instantiates it), so
that MLflow, an optional extra, costs nothing to the runs that do not use it.

* the run is named after its directory (``results_N``, ``fold_K/results``) and tagged with it, the code's
  git commit and the mammo status it ends with;
* its parameters are summary.json's ``hyperparameters`` (logged first; Lightning's own model
  hyperparameters add only the keys those lack), its metrics every epoch's values (Lightning) and
  the best epoch's (``best_*``, at the end);
* at the end it gets the run's summary.json, val_predictions.csv, ``metrics/`` and ``plots/``;
* the folds of a CV job and the trials of an HPO study are nested under one parent run each
  (MLflow's ``mlflow.parentRunId`` tag), found by its ``mammo.parent`` tag or created;
* a resumed run (``resume=<run dir>``) continues the MLflow run its summary.json names
  (``integration.mlflow_run_id``): one MLflow run per run directory.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lightning.pytorch.loggers import MLFlowLogger
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mammo.artifacts.provenance import git_info
from mammo.artifacts.redact import mask, usable_url
from mammo.core.errors import ConfigError

log = logging.getLogger("mammo")

PARENT_TAG = "mammo.parent"
MLFLOW_STATUS = {"completed": "FINISHED", "pruned": "FINISHED", "interrupted": "KILLED"}  # else FAILED
ARTIFACTS = ("summary.json", "val_predictions.csv", "metrics", "plots", "review")


class MammoMLFlowLogger(MLFlowLogger):
    """An ``MLFlowLogger`` for the run in ``save_dir`` (see the module docstring).

    Args:
        tracking_uri: where MLflow keeps runs; a ``sqlite:///`` file's folder is created.
        artifact_location: where the experiment's artifacts go (a path; made absolute).
        save_dir: the run directory (build_trainer passes it to every logger).
        study: the HPO study this run is a trial of (its parent run), or ``None``.
        cv_dir: the CV job this run is a fold of (its parent run, when not a trial), or ``None``.
        resume: the run directory being resumed (``cfg.resume``), whose MLflow run continues.
    """

    integration_key = "mlflow_run_id"

    def __init__(
        self,
        experiment_name: str,
        tracking_uri: str,
        artifact_location: str,
        save_dir: str,
        study: str | None = None,
        cv_dir: str | None = None,
        resume: str | None = None,
        **kwargs: Any,
    ) -> None:
        given, tracking_uri = tracking_uri, usable_url(tracking_uri)  # a password given is in the environment
        check_reachable(tracking_uri, shown=mask(given))
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        artifact_location = Path(artifact_location).resolve().as_uri()
        self.run_dir = Path(save_dir)
        tags = {"mammo.run_dir": str(self.run_dir.resolve())}
        commit = git_info()["git_commit"]
        if commit:
            tags["mlflow.source.git.commit"] = commit
        client = MlflowClient(tracking_uri)
        experiment_id = experiment_id_of(client, experiment_name, artifact_location)
        parent = f"study:{study}" if study else (f"cv:{Path(cv_dir).resolve()}" if cv_dir else None)
        if parent:
            tags["mlflow.parentRunId"] = parent_run(client, experiment_id, parent)
        self.uri, self.shown = tracking_uri, (run_name(self.run_dir, cv_dir), experiment_name)
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name(self.run_dir, cv_dir),
            tracking_uri=tracking_uri,
            tags=tags,
            artifact_location=artifact_location,
            log_model=False,
            run_id=continued_run(client, self.run_dir) if resume else None,
            **kwargs,
        )
        self._logged_params: set[str] = set()

    def log_hyperparams(self, params: dict | Any) -> None:
        """Log the keys not logged yet (MLflow refuses a second, different value for a parameter)."""
        params = dict(params) if isinstance(params, dict) else vars(params)
        new = {k: v for k, v in self._flatten(params).items() if k not in self._logged_params}
        if new:
            super().log_hyperparams(new)
            self._logged_params.update(new)

    def record_run(self, summary: dict) -> None:
        """The end of the run as summary.json records it (``RunSummary.when_finished``), failed or
        interrupted ones included: best metrics, status tag, the run's files, MLflow's run status."""
        client, run_id, status = self.experiment, self.run_id, summary.get("status", "unknown")
        best = {k: float(v) for k, v in summary.items() if k.startswith("best_") and _is_number(v)}
        for key, value in best.items():
            client.log_metric(run_id, key, value)
        client.set_tag(run_id, "mammo.status", status)
        self.log_run_files()
        client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FAILED"))
        log.info(
            "MLflow: run %s of %s, in the runs table: %s", *self.shown, ui_link(self.uri, self.experiment_id)
        )

    def log_run_files(self) -> None:
        for name in ARTIFACTS:
            path = self.run_dir / name
            if path.is_dir():
                self.experiment.log_artifacts(self.run_id, str(path), artifact_path=name)
            elif path.is_file():
                self.experiment.log_artifact(self.run_id, str(path))

    @staticmethod
    def _flatten(params: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in params.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                out.update(MammoMLFlowLogger._flatten(value, f"{name}/"))
            else:
                out[name] = value
        return out


def ui_link(tracking_uri: str, experiment_id: str) -> str:
    """Where MLflow's UI shows an experiment's runs table (MLflow 3 opens an experiment's own page
    in its GenAI view, "No data", unless asked for the model-training workflow), for a tracking
    server (credentials left out), or how to open it over a local store.

    >>> ui_link("http://ann:pw@mlflow.lab:5000/", "3")
    'http://mlflow.lab:5000/#/experiments/3?workflowType=machine_learning'
    >>> ui_link("sqlite:///out/mlruns/mlflow.db", "1")
    'mlflow ui --backend-store-uri sqlite:///out/mlruns/mlflow.db, then http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning'
    """
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        url = urlsplit(tracking_uri)
        netloc = url.hostname + (f":{url.port}" if url.port else "")
        return urlunsplit((url.scheme, netloc, url.path.rstrip("/") + "/", "", "")) + page
    return f"mlflow ui --backend-store-uri {tracking_uri}, then http://127.0.0.1:5000/{page}"


def continued_run(client: MlflowClient, run_dir: Path) -> str | None:
    """The MLflow run of the run directory being resumed, marked running again; ``None`` (a new
    run) when its summary.json names none or the tracking store does not have it."""
    try:
        run_id = json.loads((run_dir / "summary.json").read_text())["integration"]["mlflow_run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        client.update_run(run_id, status="RUNNING")
    except MlflowException as exc:  # not in this store (another tracking URI, deleted)
        log.warning("MLflow run %s of %s not found (%s): a new one starts", run_id, run_dir, exc)
        return None
    log.info("MLflow: continuing run %s", run_id)
    return run_id


def check_reachable(tracking_uri: str, shown: str, timeout_s: float = 5.0) -> None:
    """An HTTP tracking server that does not answer stops the run at once with one line (MLflow's
    client would retry for minutes and end in a traceback), naming the URI as ``shown`` (masked).
    Any HTTP answer counts, 401 included."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"logger.mlflow.tracking_uri={shown}: no MLflow tracking server answers there "
            f"({reason}); start it, correct the URI, or train without logger=mlflow"
        ) from None


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3's UI opens an experiment without this tag in its GenAI view (traces: "No data"); with
it, in the runs table of model training."""


def experiment_id_of(client: MlflowClient, name: str, artifact_location: str) -> str:
    """The id of the experiment ``name``, created if it does not exist yet, tagged as model
    training (:data:`EXPERIMENT_KIND`; also an experiment an earlier mammo created)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=artifact_location, tags=EXPERIMENT_KIND
            )
        except Exception:  # another process created it first
            experiment_id = client.get_experiment_by_name(name).experiment_id
        experiment = client.get_experiment(experiment_id)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def parent_run(client: MlflowClient, experiment_id: str, key: str) -> str:
    """The run tagged ``mammo.parent=key`` in the experiment (the first), created if none is."""
    query = f"tags.`{PARENT_TAG}` = '{key}'"
    found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    name = key.split(":", 1)[1].rstrip("/").rsplit("/", 1)[-1]
    run = client.create_run(experiment_id, run_name=name, tags={PARENT_TAG: key})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def run_name(run_dir: Path, cv_dir: str | None) -> str:
    """``results_N``, or a fold's path in its CV job (``fold_2/results``)."""
    if cv_dir and run_dir.resolve().is_relative_to(Path(cv_dir).resolve()):
        return str(run_dir.resolve().relative_to(Path(cv_dir).resolve()))
    return run_dir.name


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
