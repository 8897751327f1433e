"""Aggregate k-fold cross-validation from its fold directories.

Layout (``cv=kfold``)::

    outputs/density_experiments/results_k<K>_seed<S>/
    ├── folds.csv             image_id, AccessionNumber, PatientID, label, fold
    ├── fold_<k>/results/     a complete run directory per fold (summary.json, run.log, ...)
    ├── oof_predictions.csv   every image once, predicted by the fold that held it out
    ├── test_ensemble_predictions.csv   the locked test split: the folds' mean probabilities
    ├── cv_summary.json       mean/std/values per metric, fold details, OOF and test metrics
    └── run.log               the CV job's log (all folds in one job only)

``cv_summary.json`` is computed from the fold directories alone, so the same function serves the
in-process run (``mammo.workflows.folds``), the end of a ``-m cv.fold=1,2,3`` sweep
(``mammo.workflows.sweep.SweepCallback``) and a re-aggregation after re-running one fold
(``python -m mammo.cv <dir>``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo.artifacts.files import prediction_arrays, read_predictions, write_predictions
from mammo.artifacts.io import write_csv, write_json
from mammo.artifacts.rundir import fold_dirs
from mammo.core.errors import MammoError
from mammo.evaluation.intervals import metric_intervals
from mammo.evaluation.levels import write_levels
from mammo.evaluation.metrics import SHORT_NAMES, density_metrics, labelled_mean_std

ALIASES = {"kappa": "kappa_quadratic", "auc": "auc_ovr"}  # the spec's second cv_summary shape


def aggregate(cv_dir: str | Path, experiment_name: str | None = None, monitor: str = "val_kappa") -> dict:
    """Write ``cv_summary.json`` and ``oof_predictions.csv`` from the fold directories.

    Statistics cover the completed folds (``num_folds_aggregated``); failed or missing folds are
    listed in ``fold_details`` with their status. ``std`` is the sample standard deviation
    (``ddof=1``; 0 for a single fold).
    """
    cv_dir = Path(cv_dir)
    dirs = fold_dirs(cv_dir)
    if not dirs:
        raise MammoError(f"{cv_dir}: no fold_<k>/results directories to aggregate")
    summaries = {k: _read_summary(d) for k, d in dirs.items()}
    declared = [s.get("data_config", {}).get("cv_folds") for s in summaries.values() if s]
    num_folds = next((int(n) for n in declared if n), max(dirs))
    first = next(s for s in summaries.values() if s)
    details = [fold_detail(k, summaries.get(k), monitor) for k in range(1, num_folds + 1)]
    completed = [d["fold"] for d in details if d["status"] == "completed"]
    done = [d for d in details if d["status"] == "completed"]
    objective = {
        **labelled_mean_std([d.get("objective") for d in done], completed, "folds"),
        "metric": monitor,
    }
    stats = {name: labelled_mean_std([d[name] for d in done], completed, "folds") for name in SHORT_NAMES}
    stats.update({alias: stats[name] for alias, name in ALIASES.items()})
    done_dirs = {k: dirs[k] for k in completed}
    oof = out_of_fold_predictions(cv_dir, done_dirs)
    cv_summary = {
        "experiment_name": experiment_name or _name(cv_dir),
        "num_folds": num_folds,
        "num_folds_completed": len(completed),
        "num_folds_aggregated": len(completed),
        "failed_folds": [d["fold"] for d in details if d["status"] != "completed"],
        "seed": first.get("seed"),
        "base_seed": first.get("seed"),
        "git_commit": first.get("git_commit"),
        "git_dirty": first.get("git_dirty"),
        "monitor": monitor,
        "objective": objective,
        "metrics": stats,
        "aggregated_metrics": stats,
        "fold_details": details,
        "oof_metrics": _oof_metrics(oof) if oof is not None else None,
        "oof_samples": None if oof is None else len(oof),
        "test": locked_test_results(cv_dir, done_dirs, list(filter(None, summaries.values()))),
        "folds_file": "folds.csv" if (cv_dir / "folds.csv").is_file() else None,
    }
    write_json(cv_dir / "cv_summary.json", cv_summary)
    return cv_summary


def fold_detail(k: int, summary: dict | None, monitor: str) -> dict:
    """One entry of ``fold_details``: status, sizes, and a completed fold's best-epoch metrics."""
    detail = {
        "fold": k,
        "status": summary["status"] if summary else "missing",
        "summary_path": f"fold_{k}/results/summary.json",
    }
    if not summary:
        return detail
    data = summary.get("data_config", {})
    detail.update(
        best_epoch=summary.get("best_epoch"),
        train_samples=data.get("num_train"),
        val_samples=data.get("num_val"),
        error=summary.get("error"),
    )
    if summary["status"] == "completed":
        detail.update({name: summary.get(f"best_val_{short}") for name, short in SHORT_NAMES.items()})
        detail["kappa"], detail["auc"] = detail["kappa_quadratic"], detail["auc_ovr"]
        detail["objective"] = summary.get(f"best_{monitor}")
    return detail


def out_of_fold_predictions(cv_dir: Path, dirs: dict[int, Path]) -> pd.DataFrame | None:
    """The completed folds' ``val_predictions.csv`` with their fold, written as
    ``oof_predictions.csv`` (an image predicted by two folds is an error)."""
    frames = [
        pd.read_csv(d / "val_predictions.csv").assign(fold=k)
        for k, d in dirs.items()
        if (d / "val_predictions.csv").is_file()
    ]
    if not frames:
        return None
    oof = pd.concat(frames, ignore_index=True)
    duplicated = oof["image_id"].duplicated()
    if duplicated.any():
        raise MammoError(
            f"{cv_dir}: image(s) predicted by two folds: {list(oof['image_id'][duplicated][:5])}"
        )
    write_csv(cv_dir / "oof_predictions.csv", oof, float_format="%.9g")
    return oof


def _oof_metrics(oof: pd.DataFrame) -> dict:
    probs, targets = prediction_arrays(oof)
    return density_metrics(torch.tensor(probs), torch.tensor(targets))


def locked_test_results(cv_dir: Path, dirs: dict[int, Path], summaries: list[dict]) -> dict | None:
    """The locked test split under CV: each completed fold's model on it (``test_predictions.csv``)
    and the fold ensemble, the mean of their probabilities image by image, with 95 % intervals
    (the folds' own ``bootstrap`` setting); ``None`` without a test split."""
    frames = {
        k: read_predictions(d / "test_predictions.csv")
        for k, d in dirs.items()
        if (d / "test_predictions.csv").is_file()
    }
    if not frames:
        return None
    folds = list(frames)
    per_fold = {k: _oof_metrics(frame) for k, frame in frames.items()}
    ensemble = frames[folds[0]].copy()
    columns = [c for c in ensemble.columns if c.startswith("prob_class")]
    stacked = pd.concat([f.set_index("image_id")[columns] for f in frames.values()])
    ensemble[columns] = stacked.groupby(level=0).mean().loc[ensemble["image_id"]].to_numpy()
    labels = np.array([int(c.removeprefix("prob_class")) for c in columns])
    ensemble["predicted_label"] = labels[ensemble[columns].to_numpy().argmax(axis=1)]
    write_predictions(cv_dir / "test_ensemble_predictions.csv", ensemble)
    probs, targets = prediction_arrays(ensemble)
    bootstrap = next((s["bootstrap"] for s in summaries if s.get("bootstrap")), None)
    resamples, seed = (int(bootstrap["resamples"]), int(bootstrap["seed"])) if bootstrap else (0, 0)
    intervals, levels = None, {}
    if (cv_dir / "folds.csv").is_file():
        patients = pd.read_csv(cv_dir / "folds.csv", dtype=str).set_index("image_id")["PatientID"]
        ensemble["PatientID"] = ensemble["image_id"].map(patients).to_numpy()
        intervals = metric_intervals(probs, targets, ensemble["PatientID"].to_numpy(), resamples, seed)
        stem = "test_ensemble_predictions"
        unit = next((s.get("model_config", {}).get("unit") for s in summaries), None)
        levels = write_levels(cv_dir, "test_ensemble", stem, ensemble, "mean", resamples, seed, unit)
    return {
        "num_images": len(ensemble),
        "folds": folds,
        "fold_metrics": {
            name: labelled_mean_std([fold[name] for fold in per_fold.values()], folds, "folds")
            for name in SHORT_NAMES
        },
        "ensemble": {
            "metrics": density_metrics(torch.tensor(probs), torch.tensor(targets)),
            **(intervals or {}),
            "levels": levels,
            "predictions_file": "test_ensemble_predictions.csv",
        },
    }


def _read_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _name(cv_dir: Path) -> str:
    match = re.match(r"^results_k(\d+)_seed(\d+)$", cv_dir.name)
    return f"density_k{match.group(1)}_seed{match.group(2)}" if match else cv_dir.name
