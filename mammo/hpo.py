"""Optuna search artifacts (``hpo=density_optuna``; the study itself runs in the sweeper plugin
``hydra_plugins/mammo_optuna``).

Per trial (a run directory under ``outputs/<experiment>/hpo_runs/results_N/``):
``optuna_trial.json`` (the spec's fields) and ``hpo_trial<n>.jsonl`` (one line per validation
epoch). Per study, written when the sweep ends (``mammo.sweep.SweepCallback``):
``hpo_runs/best_params.json``, ``hpo_runs/trials.csv`` and ``hpo_runs/plots/*.png``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from datetime import datetime
from pathlib import Path

import lightning as L

from mammo.artifacts.io import write_csv, write_json

log = logging.getLogger("mammo")


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class TrialRecord:
    """``optuna_trial.json`` of the trial running in ``run_dir``."""

    def __init__(self, run_dir: Path, cfg) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        sweeper = HydraConfig.get().sweeper
        self.path = Path(run_dir) / "optuna_trial.json"
        names = list((sweeper.get("params") or {}).keys())
        self.data = {
            "trial_id": trial_id(sweeper.get("study_name"), cfg.hpo.trial),
            "trial_number": int(cfg.hpo.trial),
            "study_name": sweeper.get("study_name"),
            "storage": sweeper.get("storage"),
            "params": {n: _plain(OmegaConf.select(cfg, n)) for n in names},
            "value": None,
            "metric": cfg.monitor,
            "state": "RUNNING",
            "datetime_start": _now(),
            "datetime_complete": None,
            "run_dir": str(run_dir),
        }
        write_json(self.path, self.data)

    def finish(self, value: float | None, error: BaseException | None = None) -> None:
        ok = error is None and value is not None and math.isfinite(value)
        self.data.update(
            value=value if ok else None,
            state="COMPLETE" if ok else "FAIL",
            datetime_complete=_now(),
            reason=None if ok else (f"{type(error).__name__}: {error}" if error else f"objective is {value}"),
        )
        write_json(self.path, self.data)


def trial_id(study_name: str | None, number: int) -> str:
    """The spec's ``trial_id``, unique across studies.

    >>> trial_id("mammo_tiny_density_density_optuna", 3)
    'mammo_tiny_density_density_optuna_trial3'
    """
    return f"{study_name}_trial{int(number)}"


class EpochStream(L.Callback):
    """Appends one JSON line per validation epoch to ``path`` (``hpo_trial<n>.jsonl``)."""

    def __init__(self, path: Path, trial_name: str, fold: int | None = None) -> None:
        self.path, self.trial_name, self.fold = Path(path), trial_name, fold

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the epoch's validation: callback_metrics hold this epoch's train_* and val_*
        record = {"trial_name": self.trial_name, "iteration": trainer.current_epoch + 1}
        if self.fold is not None:
            record["fold"] = self.fold
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}
        record.update({k: v if math.isfinite(v) else None for k, v in metrics.items()})
        record["timestamp"] = _now()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def report(hpo_dir: Path, storage: str, study_name: str) -> dict | None:
    """Write ``best_params.json``, ``trials.csv`` and ``plots/`` for the study; returns the best."""
    import optuna
    import pandas as pd

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    run_dirs = _trial_run_dirs(hpo_dir, study_name)
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                **{f"params_{k}": v for k, v in t.params.items()},
                "duration_seconds": duration,
                "run_dir": run_dirs.get(t.number),
            }
        )
    write_csv(hpo_dir / "trials.csv", pd.DataFrame(rows))
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = None
    if completed:
        b = study.best_trial
        best = {
            "study_name": study_name,
            "trial_number": b.number,
            "trial_id": trial_id(study_name, b.number),
            "params": b.params,
            "value": b.value,
            "run_dir": run_dirs.get(b.number),
            "num_trials": len(trials),
            "num_completed": len(completed),
        }
        write_json(hpo_dir / "best_params.json", best)
    _plots(study, hpo_dir / "plots", len(completed))
    return best


def _trial_run_dirs(hpo_dir: Path, study_name: str) -> dict[int, str]:
    out = {}
    for path in sorted(hpo_dir.glob("results_*/optuna_trial.json")):
        data = json.loads(path.read_text())
        if data.get("study_name") == study_name:
            out[int(data["trial_number"])] = str(path.parent)
    return out


def _plots(study, folder: Path, completed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    plots = [("optimization_history.png", ovm.plot_optimization_history)]
    if completed >= 2 and study.best_trial.params:
        plots.append(("param_importances.png", ovm.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():  # optuna 2.x marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a parameter that never varied
            log.warning("HPO plot %s skipped: %s", name, exc)
            continue
        axes.figure.tight_layout()
        axes.figure.savefig(folder / name, dpi=100)
        plt.close(axes.figure)


def _plain(value):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
