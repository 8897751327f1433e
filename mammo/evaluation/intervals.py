"""Confidence intervals of a split's metrics, added to its ``metrics/<split>_metrics.*`` files.

Computed once per split and run, for the best epoch's validation predictions (at the end of
training, from ``val_predictions.csv``) and for an evaluation's predictions, never per epoch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.artifacts.files import write_metrics
from mammo.evaluation.bootstrap import bootstrap_intervals
from mammo.evaluation.metrics import SHORT_NAMES

log = logging.getLogger("mammo")
LEVEL = 0.95


def metric_intervals(
    probs, targets, patients, resamples: int, seed: int, what: str = "images"
) -> dict | None:
    """``{"confidence_intervals": {metric: [low, high]}, "bootstrap": {...}}`` from a patient
    bootstrap of ``resamples`` resamples (``None`` for 0), timed in run.log (``what`` the rows
    are: images, breasts or exams)."""
    if resamples <= 0:
        return None
    start = time.perf_counter()
    intervals = bootstrap_intervals(probs, targets, patients, resamples, seed, LEVEL)
    seconds = time.perf_counter() - start
    n_patients = len(set(map(str, patients)))
    log.info(
        "95%% confidence intervals: %d patient-bootstrap resamples of %d %s (%d patients) in %.1f s",
        resamples,
        len(targets),
        what,
        n_patients,
        seconds,
    )
    return {
        "confidence_intervals": intervals,
        "bootstrap": {
            "resamples": resamples,
            "unit": "patient",
            "level": LEVEL,
            "seed": seed,
            "num_patients": n_patients,
            "seconds": round(seconds, 3),
        },
    }


def add_run_intervals(run_dir: Path, val_table: pd.DataFrame, class_labels, resamples: int, seed: int):
    """Add the intervals of the best epoch's validation metrics to ``metrics/val_metrics.*`` (from
    ``val_predictions.csv``, patients from ``val_table``); returns them, or ``None`` when there is
    nothing to add (no resamples, or no best epoch)."""
    predictions, stored = run_dir / "val_predictions.csv", run_dir / "metrics" / "val_metrics.json"
    if resamples <= 0 or not predictions.is_file() or not stored.is_file():
        return None
    frame = pd.read_csv(predictions, dtype={"image_id": str, "AccessionNumber": str})
    probs = frame[[f"prob_class{c}" for c in class_labels]].to_numpy()
    targets = np.searchsorted(np.asarray(class_labels), frame["true_label"].to_numpy())
    patient_of = val_table.drop_duplicates("image_id").set_index("image_id")["PatientID"]
    patients = frame["image_id"].map(patient_of).to_numpy()
    intervals = metric_intervals(probs, targets, patients, resamples, seed)
    content = json.loads(stored.read_text())
    metrics = {name: content.pop(name) for name in SHORT_NAMES if name in content}
    write_metrics(run_dir / "metrics", "val", metrics, content, intervals)
    return intervals
