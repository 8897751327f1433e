"""EMBED (Emory Breast Imaging Dataset) label files as published (``data=embed``;
``shared/spec/public-datasets.md``)."""

from __future__ import annotations

from pathlib import Path

from mammo.core.errors import DataError
from mammo.data.datasets.common import Density, LabelTable, finish, laterality_code, read_table
from mammo.data.datasets.registry import register

EMBED_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
METADATA_COLUMNS = (
    "anon_dicom_path",
    "empi_anon",
    "acc_anon",
    "FinalImageType",
    "ImageLateralityFinal",
    "ViewPosition",
)


@register("embed")
def read_embed(files: list[Path], dicom_root: Path, bad, path_prefix: str = EMBED_PREFIX, **_) -> LabelTable:
    """EMBED clinical + metadata tables: images (metadata rows) joined to their exam's ``tissueden``
    (clinical rows) on ``empi_anon``, ``acc_anon`` and side (clinical ``side`` equal to
    ``ImageLateralityFinal``, or ``B``/empty). Only 2D full-field images (``FinalImageType`` 2D,
    no ``spot_mag``); ``tissueden`` 5 (male) and empty are left out. ``anon_dicom_path`` loses
    ``path_prefix`` and is read under ``dicom_root`` (``<root>/images``)."""
    clinical_path, meta_path = _embed_files(files)
    clinical = read_table(clinical_path, [["empi_anon"], ["acc_anon"], ["tissueden"], ["side"]])
    meta = read_table(meta_path, [[c] for c in METADATA_COLUMNS])
    density = Density(clinical_path, "tissueden", bad)
    by_exam = _densities_by_exam(clinical)
    rows, excluded = [], []
    for r in meta.to_dict("records"):
        row, where = int(r["csv_row"]), {"file": meta_path.name, "row": int(r["csv_row"])}
        relpath = r["anon_dicom_path"].removeprefix(path_prefix).lstrip("/")
        reason = _not_full_field(r)
        if reason:
            excluded.append({**where, "image": relpath, "reason": reason})
            continue
        side = r["ImageLateralityFinal"].upper()
        matches = [
            (d, cr) for s, d, cr in by_exam.get((r["empi_anon"], r["acc_anon"]), []) if s in (side, "B", "")
        ]
        if not matches:
            excluded.append({**where, "image": relpath, "reason": "no clinical row for this exam and side"})
            continue
        values = {d for d, _ in matches if d not in ("", "nan")}
        if len(values) > 1:
            bad(
                f"{clinical_path}: exam {r['acc_anon']}: conflicting tissueden {sorted(values)}",
                row=matches[0][1],
            )
            continue
        raw = values.pop() if values else ""
        where = {**where, "image": relpath}
        value = density.label(raw, matches[0][1], where, excluded, exclude={"5": "male (tissueden 5)"})
        if value is None:
            continue
        rows.append(
            {
                "image_path": relpath,
                "density": value,
                "PatientID": r["empi_anon"],
                "AccessionNumber": r["acc_anon"],
                "laterality": laterality_code(side),
                "view": r["ViewPosition"],
                "split": "",
                "csv_row": row,
            }
        )
    return finish(rows, excluded, [clinical_path, meta_path])


def _embed_files(files: list[Path]) -> tuple[Path, Path]:
    if len(files) != 2:
        raise DataError("data=embed needs data.csv=[<clinical table>, <metadata table>]")
    headers = {Path(f): read_table(f, []).columns for f in files}
    clinical = [f for f, cols in headers.items() if "tissueden" in cols]
    meta = [f for f, cols in headers.items() if "anon_dicom_path" in cols]
    if len(clinical) != 1 or len(meta) != 1:
        raise DataError(
            f"data=embed: expected one clinical table (with tissueden) and one metadata table (with "
            f"anon_dicom_path) in data.csv; got {', '.join(str(f) for f in files)}"
        )
    return clinical[0], meta[0]


def _not_full_field(row: dict) -> str:
    """Why a metadata row is not a 2D full-field image ("" when it is one)."""
    if row["FinalImageType"].upper() != "2D":
        return f"not a 2D image ({row['FinalImageType']})"
    if row.get("spot_mag", "") not in ("", "0", "0.0", "nan"):
        return "spot compression / magnification view"
    return ""


def _densities_by_exam(clinical) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """``(empi_anon, acc_anon) -> [(side, tissueden, csv_row), ...]`` of the clinical table."""
    by_exam: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for r in clinical.itertuples(index=False):
        by_exam.setdefault((r.empi_anon, r.acc_anon), []).append((r.side.upper(), r.tissueden, r.csv_row))
    return by_exam
