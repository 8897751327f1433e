"""Confidence intervals of a split's metrics, added to its ``metrics/<split>_metrics.*`` files.

Computed once per split and run, for the best epoch's validation predictions (at the end of
training, from ``val_predictions.csv``) and for an evaluation's predictions, never per epoch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mammo.artifacts.files import prediction_arrays, read_predictions, write_metrics
from mammo.evaluation.bootstrap import bootstrap_intervals
from mammo.evaluation.metrics import SHORT_NAMES

log = logging.getLogger("mammo")
LEVEL = 0.95
MIN_PATIENTS = 5
"""Fewer patients than this are too few for a patient-bootstrap interval (a split, a level or a
subgroup): its values are reported without one, and a note says why."""


def too_few_patients(patients: int) -> str | None:
    """Why ``patients`` patients get no interval, ``None`` when they get one.

    >>> too_few_patients(4), too_few_patients(5)
    ('4 patient(s): too few for an interval (needs 5)', None)
    """
    if patients >= MIN_PATIENTS:
        return None
    return f"{patients} patient(s): too few for an interval (needs {MIN_PATIENTS})"


@dataclass(frozen=True)
class EvalSettings:
    """How a split's predictions are summarised (``conf/eval/default.yaml``): ``bootstrap``
    patient-bootstrap resamples for the 95 % intervals (0: none), ``aggregate`` (``mean`` or
    ``max``) of a breast's or exam's images, and the resampling ``seed`` (the run's)."""

    bootstrap: int
    aggregate: str
    seed: int


def metric_intervals(
    probs, targets, patients, resamples: int, seed: int, what: str = "images"
) -> dict | None:
    """``{"confidence_intervals": {metric: [low, high]}, "bootstrap": {...}}`` from a patient
    bootstrap of ``resamples`` resamples (``None`` for 0), timed in run.log (``what`` the rows
    are: images, breasts or exams). Below :data:`MIN_PATIENTS` patients there is no interval:
    ``confidence_intervals`` is empty and ``bootstrap`` holds the ``note`` run.log shows."""
    if resamples <= 0:
        return None
    n_patients = len(set(map(str, patients)))
    note = too_few_patients(n_patients)
    if note:
        log.info("95%% confidence intervals: none for %d %s of %s", len(targets), what, note)
        settings = {"resamples": resamples, "unit": "patient", "level": LEVEL, "seed": seed}
        bootstrap = {**settings, "num_patients": n_patients, "note": note}
        return {"confidence_intervals": {}, "bootstrap": bootstrap}
    start = time.perf_counter()
    intervals = bootstrap_intervals(probs, targets, patients, resamples, seed, LEVEL)
    seconds = time.perf_counter() - start
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


def read_best_epoch(run_dir: Path, val_table: pd.DataFrame) -> pd.DataFrame | None:
    """The best epoch's ``val_predictions.csv`` with each image's ``PatientID``, or ``None`` when
    the run has no best epoch."""
    path = run_dir / "val_predictions.csv"
    if not path.is_file():
        return None
    frame = read_predictions(path)
    patient_of = val_table.drop_duplicates("image_id").set_index("image_id")["PatientID"]
    frame["PatientID"] = frame["image_id"].map(patient_of).to_numpy()
    return frame


def add_val_intervals(run_dir: Path, frame: pd.DataFrame, resamples: int, seed: int) -> dict | None:
    """Add the intervals of the best epoch's metrics (predictions ``frame``) to
    ``metrics/val_metrics.*``; returns them, or ``None`` when there is nothing to add."""
    stored = run_dir / "metrics" / "val_metrics.json"
    if resamples <= 0 or not stored.is_file():
        return None
    probs, targets = prediction_arrays(frame)
    intervals = metric_intervals(probs, targets, frame["PatientID"].to_numpy(), resamples, seed)
    content = json.loads(stored.read_text())
    metrics = {name: content.pop(name) for name in SHORT_NAMES if name in content}
    write_metrics(run_dir / "metrics", "val", metrics, content, intervals)
    return intervals
