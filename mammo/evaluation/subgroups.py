"""For whom does the model work: every metric per subgroup, with patient-bootstrap 95 % intervals.

Subgroups are the values of the scanner's ``manufacturer`` and ``model_name`` (DICOM Manufacturer,
ManufacturerModelName), ``view`` and ``laterality``, and of any label-file column asked for. A
subgroup with fewer than :data:`~mammo.evaluation.intervals.MIN_PATIENTS` patients gets its values
but no interval, and says so. Written as ``metrics/<split>_subgroups.{csv,json}`` beside the
split's other metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.artifacts.files import prediction_arrays
from mammo.artifacts.io import write_csv, write_json
from mammo.data.scan import FILE_KEYS, SCANNER_COLUMNS
from mammo.evaluation.bootstrap import bootstrap_intervals, weighted_metrics
from mammo.evaluation.intervals import MIN_PATIENTS, too_few_patients
from mammo.evaluation.metrics import TITLES

log = logging.getLogger("mammo")
SUBGROUP_COLUMNS = (*SCANNER_COLUMNS, "view", "laterality")
CSV_COLUMNS = ["subgroup", "group", "num_images", "num_patients", "metric", "value", "ci_low", "ci_high"]


def label_subgroups(datamodule) -> tuple[str, ...]:
    """The label file's own subgroup columns (``data.subgroup_columns``: site, age band, ...)."""
    return tuple(datamodule.labels.columns.subgroup_columns)


def with_subgroups(frame: pd.DataFrame, samples: pd.DataFrame, columns=SUBGROUP_COLUMNS) -> pd.DataFrame:
    """``frame`` (predictions) with each subgroup column of ``samples`` (its sample rows, by
    ``image_id``) that the predictions do not already have."""
    frame = frame.copy()
    rows = samples.drop_duplicates("image_id").set_index("image_id")
    for column in columns:
        if column not in frame and column in rows:
            frame[column] = frame["image_id"].map(rows[column]).fillna("").astype(str).to_numpy()
    return frame


def manifest_subgroups(frame: pd.DataFrame, manifest: dict) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """``frame`` (predictions) with the subgroups each image's ``data_manifest.json`` entry names
    (its scanner and the label file's subgroup columns), and every subgroup column it then has:
    :data:`SUBGROUP_COLUMNS` first, then the label file's."""
    files = pd.DataFrame(manifest.get("files", []))
    extra = [c for c in files.columns if c not in FILE_KEYS and c not in SUBGROUP_COLUMNS]
    columns = (*SUBGROUP_COLUMNS, *extra)
    frame = with_subgroups(frame, files, columns) if "image_id" in files else frame
    return frame, tuple(c for c in columns if c in frame)


def subgroup_metrics(frame: pd.DataFrame, columns, resamples: int, seed: int) -> list[dict]:
    """One entry per subgroup: ``subgroup`` (the column), ``group`` (its value; ``""`` is
    "unknown"), ``num_images``, ``num_patients``, ``metrics`` and ``confidence_intervals`` (or
    ``None`` with a ``note`` saying why). Columns that are empty everywhere are left out."""
    return [
        one_subgroup(column, group, frame[rows], resamples, seed)
        for column, group, rows in subgroup_rows(frame, columns)
    ]


def subgroup_rows(frame: pd.DataFrame, columns) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(column, group, rows)`` for each value of each subgroup column of ``frame`` (sorted; ``""``
    is "unknown"), ``rows`` a boolean mask; columns that are missing or empty everywhere give none."""
    for column in columns:
        if column not in frame:
            continue
        values = frame[column].fillna("").astype(str).str.strip()
        if values.any():
            for group in sorted(values.unique()):
                yield column, group, (values == group).to_numpy()


def one_subgroup(column: str, group: str, part: pd.DataFrame, resamples: int, seed: int) -> dict:
    probs, targets = prediction_arrays(part)
    values = weighted_metrics(probs, targets, np.ones((1, len(targets))))
    metrics = {name: _finite(values[name][0]) for name in TITLES if name in values}
    patients = part["PatientID"].astype(str).to_numpy()
    entry = {
        "subgroup": column,
        "group": group,
        "num_images": len(part),
        "num_patients": len(set(patients)),
        "metrics": metrics,
        "confidence_intervals": None,
    }
    note = too_few_patients(entry["num_patients"])
    if note:
        entry["note"] = note
    elif resamples > 0:
        intervals = bootstrap_intervals(probs, targets, patients, resamples, seed)
        entry["confidence_intervals"] = {name: intervals[name] for name in metrics if name in intervals}
    return entry


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def write_subgroups(
    out: Path, prefix: str, frame: pd.DataFrame, resamples: int, seed: int, columns=SUBGROUP_COLUMNS
) -> list[dict]:
    """``metrics/<prefix>_subgroups.json`` and ``.csv`` (one row per subgroup and metric) for the
    predictions ``frame`` (with ``PatientID`` and the subgroup columns); returns the entries."""
    entries = subgroup_metrics(frame, columns, resamples, seed)
    if not entries:
        return entries
    write_json(
        out / "metrics" / f"{prefix}_subgroups.json",
        {
            "split": prefix,
            "bootstrap": {"resamples": resamples, "unit": "patient", "level": 0.95, "seed": seed},
            "min_patients_for_interval": MIN_PATIENTS,
            "subgroups": entries,
        },
    )
    rows = [
        [e["subgroup"], e["group"], e["num_images"], e["num_patients"], name, value, *interval(e, name)]
        for e in entries
        for name, value in e["metrics"].items()
    ]
    write_csv(out / "metrics" / f"{prefix}_subgroups.csv", pd.DataFrame(rows, columns=CSV_COLUMNS))
    log.info(
        "%s subgroups: %s (metrics/%s_subgroups.csv)",
        prefix,
        ", ".join(f"{e['subgroup']}={e['group'] or 'unknown'} ({e['num_images']})" for e in entries),
        prefix,
    )
    return entries


def interval(entry: dict, name: str) -> list:
    intervals = entry["confidence_intervals"] or {}
    return list(intervals.get(name) or [None, None])
