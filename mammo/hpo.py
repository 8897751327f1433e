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
from pathlib import Path

import lightning as L

from mammo.artifacts.io import write_csv, write_json
from mammo.artifacts.summary import now
from mammo.settings import plain

log = logging.getLogger("mammo")


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
            "params": {n: plain(OmegaConf.select(cfg, n)) for n in names},
            "value": None,
            "metric": cfg.monitor,
            "state": "RUNNING",
            "datetime_start": now(),
            "datetime_complete": None,
            "run_dir": str(run_dir),
        }
        # epochs the trial may train: epochs, times the folds when it runs them all
        folds = cfg.cv.get("folds") if cfg.cv.get("fold") is None else None
        self.budget = int(cfg.epochs) * int(folds or 1)
        write_json(self.path, self.data)

    def finish(
        self, value: float | None, error: BaseException | None = None, pruned: dict | None = None
    ) -> None:
        """Record the outcome; ``pruned`` (``mammo.pruning.TrialLink.describe``) marks a trial
        that the pruner stopped (``value`` is then its objective over what it ran)."""
        ok = error is None and value is not None and math.isfinite(value)
        state = "PRUNED" if pruned and error is None else "COMPLETE" if ok else "FAIL"
        reason = None
        if state == "FAIL":
            reason = f"{type(error).__name__}: {error}" if error else f"objective is {value}"
        self.data.update(
            value=value if ok else None,
            state=state,
            datetime_complete=now(),
            reason=reason,
            pruned=pruned,
            **epoch_budget(self.path.parent, self.budget),
        )
        write_json(self.path, self.data)


def epoch_budget(trial_dir: Path, budget: int) -> dict:
    """``epochs_run`` (from the run's summary.json, or its folds') and ``epochs_budget``."""
    run = 0
    for summary in [trial_dir / "summary.json", *sorted(trial_dir.glob("fold_*/results/summary.json"))]:
        if summary.is_file():
            run += int(json.loads(summary.read_text()).get("epochs_completed") or 0)
    return {"epochs_run": run, "epochs_budget": budget}


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
        record["timestamp"] = now()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def report(hpo_dir: Path, storage: str, study_name: str) -> dict | None:
    """Write ``best_params.json``, ``trials.csv`` and ``plots/`` for the study; returns the best."""
    import optuna
    import pandas as pd

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    records = _trial_records(hpo_dir, study_name)
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        record = records.get(t.number, {})
        steps = t.intermediate_values
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                **{f"params_{k}": v for k, v in t.params.items()},
                "duration_seconds": duration,
                "last_step": max(steps) if steps else None,
                "last_reported": steps[max(steps)] if steps else None,
                "epochs_run": record.get("epochs_run"),
                "epochs_budget": record.get("epochs_budget"),
                "run_dir": record.get("run_dir"),
            }
        )
    frame = pd.DataFrame(rows)
    write_csv(hpo_dir / "trials.csv", frame)
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    study_summary = _study_summary(study_name, frame)
    write_json(hpo_dir / "study_summary.json", study_summary)
    best = None
    if completed:
        b = study.best_trial
        best = {
            "study_name": study_name,
            "trial_number": b.number,
            "trial_id": trial_id(study_name, b.number),
            "params": b.params,
            "value": b.value,
            "run_dir": records.get(b.number, {}).get("run_dir"),
            "num_trials": len(trials),
            "num_completed": len(completed),
            "num_pruned": study_summary["states"].get("PRUNED", 0),
        }
        write_json(hpo_dir / "best_params.json", best)
    _plots(study, hpo_dir / "plots", len(completed))
    return best


def _study_summary(study_name: str, trials) -> dict:
    """States, and the epochs the pruner saved (``study_summary.json``)."""
    pruned = trials[trials["state"] == "PRUNED"]
    known = trials.dropna(subset=["epochs_budget"])
    saved = (pruned["epochs_budget"] - pruned["epochs_run"]).dropna()
    return {
        "study_name": study_name,
        "num_trials": len(trials),
        "states": {k: int(v) for k, v in trials["state"].value_counts().items()},
        "epochs_run": int(known["epochs_run"].sum()),
        "epochs_budget": int(known["epochs_budget"].sum()),
        "epochs_saved_by_pruning": int(saved.sum()),
        "pruned_trials": [
            {"number": int(r.number), "last_step": r.last_step, "epochs_run": r.epochs_run}
            for r in pruned.itertuples(index=False)
        ],
    }


def _trial_records(hpo_dir: Path, study_name: str) -> dict[int, dict]:
    """``optuna_trial.json`` of each trial of the study (with ``run_dir``), by trial number."""
    out = {}
    for path in sorted(hpo_dir.glob("results_*/optuna_trial.json")):
        data = json.loads(path.read_text())
        if data.get("study_name") == study_name:
            out[int(data["trial_number"])] = {**data, "run_dir": str(path.parent)}
    return out


def _plots(study, folder: Path, completed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    plots = [("optimization_history.png", _history)]
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


def _history(study):
    """Objective per trial: completed trials (dots) with the best so far, pruned trials (red x) at
    the last value they reported. Optuna's own history plot leaves pruned trials out."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pruned = [
        t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values
    ]
    if done:
        ax.plot([t.number for t in done], [t.value for t in done], "o", color="tab:blue", label="completed")
        maximize = study.direction.name == "MAXIMIZE"
        best, line = None, []
        for t in done:
            best = t.value if best is None else (max(best, t.value) if maximize else min(best, t.value))
            line.append(best)
        ax.step([t.number for t in done], line, where="post", color="tab:orange", label="best so far")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot(
            [t.number for t in pruned], last, "x", color="tab:red", markersize=9, label="pruned (last report)"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title(f"{study.study_name}: {len(done)} completed, {len(pruned)} pruned")
    ax.legend(loc="best", fontsize=8)
    return ax
