"""Writers of the per-run tables: history, predictions and metrics files (spec names and headers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammo.artifacts.io import atomic_write_text, write_csv, write_json
from mammo.core.errors import DataError

PROB_FORMAT = "%.9g"
"""Enough digits to round-trip float32 probabilities, so metrics recomputed from the CSV match."""
ID_COLUMNS = dict.fromkeys(("image_id", "AccessionNumber", "PatientID", "laterality", "view"), str)
"""Columns of a predictions file read back as text (an accession number keeps its leading zeros)."""


def write_history(run_dir: Path, history: list[dict]) -> None:
    """``train_history.json`` (column -> list of per-epoch values) and ``train_history.csv``."""
    frame = pd.DataFrame(history)
    write_json(run_dir / "train_history.json", {c: frame[c].tolist() for c in frame.columns})
    write_csv(run_dir / "train_history.csv", frame)


def predictions_frame(samples: pd.DataFrame, probs: np.ndarray, class_labels: list[int]) -> pd.DataFrame:
    """Per-image predictions: ``AccessionNumber,true_label,predicted_label,prob_class1..K,image_id``
    and, where the samples have them, ``laterality,view``.

    ``samples`` holds the rows of the predicted images in the same order as ``probs``, with
    ``AccessionNumber``, ``image_id`` and a 0-based ``label`` (absent for unlabelled data).
    """
    labels = np.asarray(class_labels)
    frame = pd.DataFrame({"AccessionNumber": samples["AccessionNumber"].to_numpy()})
    if "label" in samples:
        frame["true_label"] = labels[samples["label"].to_numpy()]
    frame["predicted_label"] = labels[probs.argmax(axis=1)]
    for j, cls in enumerate(class_labels):
        frame[f"prob_class{cls}"] = probs[:, j]
    frame["image_id"] = samples["image_id"].to_numpy()
    for column in ("laterality", "view"):  # where the data has them (left empty otherwise)
        if column in samples:
            frame[column] = samples[column].fillna("").to_numpy()
    return frame


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    """The rows as the predictions file's lines (probabilities to ``PROB_FORMAT``), written atomically."""
    atomic_write_text(path, frame.to_csv(index=False, float_format=PROB_FORMAT))


NUMBER_COLUMNS = ("true_label", "predicted_label", "predicted_density")
"""A predictions file's columns that hold numbers on every line (with the ``prob_class*`` ones)."""


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file as :func:`write_predictions` wrote it: ids as text, empty cells empty. A
    damaged file (a line cut in the middle, a cell that is no number) is one line naming the file
    and the line."""
    try:
        frame = pd.read_csv(path, dtype=ID_COLUMNS, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable predictions file ({reason})") from None
    for column in [c for c in frame.columns if c.startswith("prob_class") or c in NUMBER_COLUMNS]:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise DataError(
                f"{path}: line {row + 2}: {column} is {frame[column].iloc[row]!r}, not a number "
                "(a damaged or cut file?); write it again (mammo.evaluate) or restore it"
            )
        frame[column] = values
    return frame


def prediction_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``[N, K]`` (float64, the ``prob_class*`` columns) and 0-based classes of
    ``true_label``: the arrays behind a predictions frame (image, breast or exam rows)."""
    columns = [c for c in frame.columns if c.startswith("prob_class")]
    labels = [int(c.removeprefix("prob_class")) for c in columns]
    targets = np.searchsorted(labels, frame["true_label"].astype(int).to_numpy())
    return frame[columns].to_numpy(dtype=np.float64), targets


def write_metrics(
    metrics_dir: Path, prefix: str, metrics: dict, extra: dict, intervals: dict | None = None
) -> None:
    """``<prefix>_metrics.csv`` (``metric,value``, then ``ci_low,ci_high`` with ``intervals``) and
    ``<prefix>_metrics.json`` (metrics + extra, and the intervals under ``confidence_intervals``).

    Args:
        intervals: ``{"confidence_intervals": {metric: [low, high]}, "bootstrap": {...}}``
            (:func:`mammo.evaluation.intervals.metric_intervals`), or ``None``.
    """
    table = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    if intervals is not None:
        bounds = [intervals["confidence_intervals"].get(name, [None, None]) for name in metrics]
        table["ci_low"] = [low for low, _ in bounds]
        table["ci_high"] = [high for _, high in bounds]
    write_csv(metrics_dir / f"{prefix}_metrics.csv", table, float_format="%.6f")
    write_json(metrics_dir / f"{prefix}_metrics.json", {**metrics, **extra, **(intervals or {})})
