"""How far readers agree with the label, with the model and with each other: quadratic κ with
patient-bootstrap 95 % intervals (the same bootstrap as every metric's interval), and the images
where the readers agree against the label."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from mammo.evaluation.bootstrap import bootstrap_intervals
from mammo.evaluation.intervals import too_few_patients
from mammo.readings.store import CANNOT_TELL

AGREEMENT_COLUMNS = ("pair", "images", "patients", "kappa_quadratic", "ci_low", "ci_high", "note")
AGAINST_COLUMNS = ("image_id", "label", "readers_say", "readers", "predicted_label")


def kappa_row(pair: str, first, second, patients, classes: list[int], resamples: int, seed: int) -> dict:
    """Quadratic κ of two sets of density classes over the same images, with its interval."""
    first, second = np.asarray(first, dtype=int), np.asarray(second, dtype=int)
    row = {"pair": pair, "images": len(first), "patients": len(set(map(str, patients)))}
    if len(first) < 2 or len(set(first) | set(second)) < 2:
        return {**row, "kappa_quadratic": None, "ci_low": None, "ci_high": None, "note": "too few to compare"}
    kappa = float(cohen_kappa_score(first, second, weights="quadratic", labels=classes))
    note = too_few_patients(row["patients"]) if resamples else "no bootstrap"
    interval = [None, None]
    if note is None:
        index = {c: i for i, c in enumerate(classes)}
        onehot = np.eye(len(classes))[[index[c] for c in second]]
        targets = np.array([index[c] for c in first])
        interval = bootstrap_intervals(onehot, targets, list(patients), resamples, seed)["kappa_quadratic"]
    return {
        **row,
        "kappa_quadratic": round(kappa, 4),
        "ci_low": interval[0],
        "ci_high": interval[1],
        "note": note or "",
    }


def decided(readings: pd.DataFrame) -> pd.DataFrame:
    """Readings with a density (``cannot_tell`` left out), the reading as an integer."""
    kept = readings[readings["reading"] != CANNOT_TELL]
    return kept.assign(reading=kept["reading"].astype(int))


def agreement_table(
    readings: pd.DataFrame, queue: pd.DataFrame, classes: list[int], resamples: int, seed: int
) -> pd.DataFrame:
    """One row per pair: each reader vs the label and vs the model, and each two readers on the
    images both read (columns :data:`AGREEMENT_COLUMNS`)."""
    read = decided(readings).merge(
        queue[["image_id", "PatientID", "label", "predicted_label"]], on="image_id", suffixes=("_read", "")
    )
    pair = partial(kappa_row, classes=classes, resamples=resamples, seed=seed)
    rows = []
    for reader, own in read.groupby("reader", sort=True):
        rows.append(pair(f"{reader} vs label", own["label"], own["reading"], own["PatientID"]))
        rows.append(pair(f"{reader} vs model", own["predicted_label"], own["reading"], own["PatientID"]))
    for a, b in itertools.combinations(sorted(read["reader"].unique()), 2):
        both = read[read["reader"] == a].merge(
            read[read["reader"] == b], on="image_id", suffixes=("_a", "_b")
        )
        rows.append(pair(f"{a} vs {b}", both["reading_a"], both["reading_b"], both["PatientID_a"]))
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def readers_against_label(readings: pd.DataFrame, queue: pd.DataFrame, least: int = 2) -> pd.DataFrame:
    """Images that at least ``least`` readers read, all giving the same density, which differs
    from the label: ``image_id``, ``label``, ``readers_say``, ``readers``, ``predicted_label``."""
    read = decided(readings)
    rows = []
    for image_id, own in read.groupby("image_id", sort=True):
        said = set(own["reading"])
        if len(own) < least or len(said) != 1:
            continue
        row = queue[queue["image_id"] == image_id]
        if row.empty or int(row["label"].iloc[0]) in said:
            continue
        rows.append(
            {
                "image_id": image_id,
                "label": int(row["label"].iloc[0]),
                "readers_say": said.pop(),
                "readers": ", ".join(sorted(own["reader"])),
                "predicted_label": int(row["predicted_label"].iloc[0]),
            }
        )
    return pd.DataFrame(rows, columns=list(AGAINST_COLUMNS))
