"""Breast- and exam-level results, beside the image-level ones.

A **breast** is a patient's exam and side (``PatientID``, ``AccessionNumber``, ``laterality``), an
**exam** a patient's exam (``PatientID``, ``AccessionNumber``). A unit's probabilities are the
mean of its images' (``eval.aggregate=mean``) or their per-class maximum, renormalised (``max``).
A breast's label is its images' label; an exam's is its denser breast's, as BI-RADS assigns the
denser breast's category. A unit whose images disagree on the label (at exam level: one of its
breasts' images) is left out and counted. Without laterality there is no breast level, and
without an exam id no level at all: run.log says so and the image level stands alone.

Files, for a split ``<prefix>`` whose images are in ``<stem>.csv``: ``<stem>_breast.csv`` and
``<stem>_exam.csv`` (the unit's keys, ``num_images``, ``true_label``, ``predicted_label``,
``prob_class1..K``), and ``metrics/<prefix>_breast_metrics.*`` / ``<prefix>_exam_metrics.*``
with the image level's metrics and patient-bootstrap intervals.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo.artifacts.files import prediction_arrays, write_metrics, write_predictions
from mammo.core.errors import ConfigError
from mammo.data.units import LEVELS, unit_codes, unit_labels
from mammo.evaluation.intervals import metric_intervals
from mammo.evaluation.metrics import confusion_matrix, density_metrics

log = logging.getLogger("mammo")
AGGREGATES = ("mean", "max")


def unit_predictions(images: pd.DataFrame, level: str, aggregate: str = "mean") -> tuple[pd.DataFrame, int]:
    """The units of ``level`` from image-level predictions (with ``PatientID``) and how many were
    left out because their images disagree on the label."""
    if aggregate not in AGGREGATES:
        raise ConfigError(f"eval.aggregate={aggregate!r}: expected one of {', '.join(AGGREGATES)}")
    keys = list(LEVELS[level])
    columns = [c for c in images.columns if c.startswith("prob_class")]
    codes = unit_codes(images, level)  # numbered by first appearance; a row missing a key: its own unit
    grouped = images.groupby(codes, sort=False)
    probs = grouped[columns].mean() if aggregate == "mean" else grouped[columns].max()
    probs = probs.div(probs.sum(axis=1), axis=0)
    units = images.reindex(columns=keys).groupby(codes, sort=False).first().reset_index(drop=True)
    units["num_images"] = grouped.size().to_numpy()
    probs = probs.reset_index(drop=True)
    left_out = 0
    if "true_label" in images:
        sides = images["laterality"].fillna("").astype(str).to_numpy() if "laterality" in images else None
        truth, keep = unit_labels(
            images["true_label"].to_numpy(), codes, sides if sides is not None else np.full(len(codes), "")
        )
        units["true_label"] = truth
        left_out = int((~keep).sum())
        units, probs = units[keep], probs[keep]
    labels = np.array([int(c.removeprefix("prob_class")) for c in columns])
    units["predicted_label"] = labels[probs.to_numpy().argmax(axis=1)]
    for column in columns:
        units[column] = probs[column].to_numpy()
    return units.reset_index(drop=True), left_out


def available_levels(images: pd.DataFrame, prefix: str, unit: str | None = None) -> list[str]:
    """The levels the data allows: an exam id on every image, and for breasts a laterality too.
    An exam-level model (``model.unit=exam``) has no breast level: it predicts exams only."""
    if unit == "exam":
        return [level for level in available_levels(images, prefix) if level == "exam"]

    def filled(column: str) -> bool:
        return column in images and images[column].fillna("").astype(str).str.strip().ne("").all()

    if not filled("AccessionNumber"):
        log.info("%s: the data has no exam id on every image: image-level results only", prefix)
        return []
    if not filled("laterality"):
        log.info("%s: the data has no laterality on every image: no breast-level results", prefix)
        return ["exam"]
    return ["breast", "exam"]


def write_levels(
    out: Path,
    prefix: str,
    stem: str,
    images: pd.DataFrame,
    aggregate: str,
    resamples: int,
    seed: int,
    unit: str | None = None,
) -> dict:
    """Breast- and exam-level predictions and metrics of one split's image-level predictions
    ``images`` (with ``PatientID``); returns ``{level: {num_units, left_out, <metric>: value}}``.
    ``unit``: the unit a multi-view model predicts, whose images all hold its prediction (so its
    level's file is the model's own, whatever ``aggregate``)."""
    results = {}
    for level in available_levels(images, prefix, unit):
        units, left_out = unit_predictions(images, level, aggregate)
        if units.empty:
            log.info("%s %s level: every unit's images disagree on the label: not reported", prefix, level)
            continue
        write_predictions(out / f"{stem}_{level}.csv", units)
        probs, targets = prediction_arrays(units)
        labels = [int(c.removeprefix("prob_class")) for c in units.columns if c.startswith("prob_class")]
        metrics = density_metrics(torch.tensor(probs), torch.tensor(targets))
        patients = units["PatientID"].to_numpy()
        intervals = metric_intervals(probs, targets, patients, resamples, seed, f"{level}s")
        extra = {
            "level": level,
            "aggregate": aggregate,
            "num_units": len(units),
            "left_out": left_out,
            "class_labels": labels,
            "confusion_matrix": confusion_matrix(torch.tensor(probs), torch.tensor(targets)),
        }
        write_metrics(out / "metrics", f"{prefix}_{level}", metrics, extra, intervals)
        log.info(
            "%s %s level: %d %ss (%d left out: their images disagree on the density), kappa %.4f",
            prefix,
            level,
            len(units),
            level,
            left_out,
            metrics["kappa_quadratic"],
        )
        results[level] = {"num_units": len(units), "left_out": left_out, **metrics}
    return results
