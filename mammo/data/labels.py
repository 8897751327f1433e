"""Label CSVs -> the sample table (one row per DICOM image).

``classificacao.csv`` layout: ``AccessionNumber`` and ``Classification`` (BI-RADS density 1-4 or
A-D; 5 means "not classifiable" and is excluded unless asked for), optional ``PatientID``.
Every DICOM under ``dicom_root/<AccessionNumber>/`` is one sample with that exam's label.
"""

from __future__ import annotations

import csv as csv_module
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.data.dicom import read_header
from mammo.errors import DataError

DENSITY_CODES = {"1": 1, "2": 2, "3": 3, "4": 4, "A": 1, "B": 2, "C": 3, "D": 4}
SAMPLE_COLUMNS = ["image_id", "path", "AccessionNumber", "PatientID", "label"]


@dataclass
class Samples:
    """The images of a dataset with 0-based labels, plus where they came from and what was left out."""

    table: pd.DataFrame
    class_labels: list[int]
    source: dict = field(default_factory=dict)
    excluded: list[dict] = field(default_factory=list)


def parse_density(value, include_class_5: bool = False) -> int | None:
    """BI-RADS density code -> 1..4 (or 5); ``None`` for an excluded class 5.

    >>> parse_density("B"), parse_density(" 3 "), parse_density(4.0), parse_density("5")
    (2, 3, 4, None)
    """
    text = str(value).strip().upper()
    if text.endswith(".0"):
        text = text[:-2]
    if text == "5":
        return 5 if include_class_5 else None
    if text not in DENSITY_CODES:
        raise ValueError(text)
    return DENSITY_CODES[text]


def read_label_csv(
    csv: str | Path,
    id_column: str = "AccessionNumber",
    label_column: str = "Classification",
    include_class_5: bool = False,
) -> tuple[pd.DataFrame, list[dict]]:
    """Read and validate a label CSV; returns (rows with a ``density`` column, excluded rows)."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"data.csv: label CSV not found: {csv}")
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv_module.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: cannot parse CSV ({exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; found: {', '.join(frame.columns)}")
    if frame.empty:
        raise DataError(f"{csv}: no rows")
    densities, excluded = [], []
    for i, (acc, raw) in enumerate(zip(frame[id_column], frame[label_column])):
        row = i + 2  # 1-based, after the header line
        try:
            density = parse_density(raw, include_class_5)
        except ValueError:
            raise DataError(
                f"{csv}: row {row} ({id_column}={acc}): unknown {label_column} {raw!r}"
                " (expected 1-4 or A-D, or 5)"
            ) from None
        if density is None:
            excluded.append({"row": row, id_column: acc, "reason": "class 5 excluded"})
        densities.append(density)
    frame["density"] = densities
    frame[id_column] = frame[id_column].str.strip()
    return frame[frame["density"].notna()].reset_index(drop=True), excluded


def accession_folder_samples(
    csv: str | Path,
    dicom_root: str | Path,
    id_column: str = "AccessionNumber",
    label_column: str = "Classification",
    patient_column: str = "PatientID",
    include_class_5: bool = False,
) -> Samples:
    """One sample per DICOM under ``dicom_root/<AccessionNumber>/`` with the exam's density.

    The patient of each image comes from the CSV's ``patient_column`` when present, else from the
    DICOM header's PatientID, else the accession number stands in for it.
    """
    dicom_root = Path(dicom_root)
    if not dicom_root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {dicom_root}")
    frame, excluded = read_label_csv(csv, id_column, label_column, include_class_5)
    rows = []
    for acc, density, patient in zip(
        frame[id_column],
        frame["density"],
        frame[patient_column] if patient_column in frame else [None] * len(frame),
    ):
        folder = dicom_root / acc
        if not folder.is_dir():
            raise DataError(f"{folder}: accession folder missing for {id_column}={acc}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: accession folder is empty ({id_column}={acc})")
        for path in files:
            pid = patient or str(read_header(path).get("PatientID", "") or acc)
            image_id = path.relative_to(dicom_root).with_suffix("").as_posix()
            rows.append((image_id, str(path), acc, pid, int(density)))
    table = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    class_labels = [1, 2, 3, 4, 5] if include_class_5 else [1, 2, 3, 4]
    table["label"] = table["label"] - 1
    return Samples(
        table=table,
        class_labels=class_labels,
        source={"csv": str(csv), "dicom_root": str(dicom_root)},
        excluded=excluded,
    )
