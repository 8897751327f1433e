"""The study report, written when a sweep ends (``mammo.workflows.sweep.SweepCallback``):
``hpo_runs/best_params.json``, ``trials.csv``, ``study_summary.json`` and ``plots/*.png``.

Per trial (a run directory under ``outputs/<experiment>/hpo_runs/results_N/``) the job itself
writes ``optuna_trial.json`` (``mammo.hpo.trial``) and ``hpo_trial<n>.jsonl``
(``mammo.hpo.trial_callbacks.EpochStream``); a trial whose job was killed with the sweep is marked
here from the study's storage (:func:`mark_interrupted_trials`).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.trial import TrialState
from optuna.visualization import matplotlib as ovm

from mammo.artifacts.io import write_csv, write_json
from mammo.hpo.storage import open_storage
from mammo.hpo.trial import trial_id

log = logging.getLogger("mammo")


def report(hpo_dir: Path, storage: str, study_name: str) -> dict | None:
    """Write ``best_params.json``, ``trials.csv`` and ``plots/`` for the study; returns the best."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    mark_interrupted_trials(hpo_dir, study)
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
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
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


def mark_interrupted_trials(hpo_dir: Path, study: optuna.Study) -> None:
    """A trial whose job died with its sweep (SIGKILL) left ``optuna_trial.json`` RUNNING; once
    the study says FAIL (a later sweep found it stale), its record and summary.json say so."""
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    for path in sorted(hpo_dir.glob("results_*/optuna_trial.json")):
        record = json.loads(path.read_text())
        if record.get("study_name") != study.study_name or record.get("state") != "RUNNING":
            continue
        if int(record["trial_number"]) not in failed:
            continue
        record.update(state="FAIL", reason="interrupted: the sweep stopped while this trial ran")
        write_json(path, record)
        summary_file = path.parent / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            if summary.get("status") == "running":
                write_json(summary_file, {**summary, "status": "interrupted"})


def _trial_records(hpo_dir: Path, study_name: str) -> dict[int, dict]:
    """``optuna_trial.json`` of each trial of the study (with ``run_dir``), by trial number."""
    out = {}
    for path in sorted(hpo_dir.glob("results_*/optuna_trial.json")):
        data = json.loads(path.read_text())
        if data.get("study_name") == study_name:
            out[int(data["trial_number"])] = {**data, "run_dir": str(path.parent)}
    return out


def _plots(study, folder: Path, completed: int) -> None:
    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    plots = [("optimization_history.png", _history)]
    if completed >= 2 and study.best_trial.params:
        plots.append(("param_importances.png", ovm.plot_param_importances))
    for name, plot in plots:
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
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
