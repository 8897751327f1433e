"""RSNA Screening Mammography label files as published (``data=rsna``; ``shared/spec/public-datasets.md``)."""

from __future__ import annotations

from pathlib import Path

from mammo.data.datasets.common import Density, LabelTable, finish, laterality_code, read_table
from mammo.data.datasets.registry import register


@register("rsna")
def read_rsna(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """RSNA Screening Mammography ``train.csv``: ``<dicom_root>/<patient_id>/<image_id>.dcm``
    (``train_images``); density A-D, empty on many rows (left out)."""
    [path] = files
    frame = read_table(path, [["patient_id"], ["image_id"], ["laterality"], ["view"], ["density"]])
    density = Density(path, "density", bad)
    rows, excluded = [], []
    for r in frame.itertuples(index=False):
        value = density.label(r.density, r.csv_row, {"row": r.csv_row, "image_id": r.image_id}, excluded)
        if value is None:
            continue
        rows.append(
            {
                "image_path": f"{r.patient_id}/{r.image_id}.dcm",
                "density": value,
                "PatientID": r.patient_id,
                "AccessionNumber": r.patient_id,  # RSNA publishes no exam id; one screening exam each
                "laterality": laterality_code(r.laterality),
                "view": r.view,
                "split": "",
                "csv_row": r.csv_row,
            }
        )
    return finish(rows, excluded, [path])
