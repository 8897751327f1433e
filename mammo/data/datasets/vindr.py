"""VinDr-Mammo label files as published (``data=vindr``; ``shared/spec/public-datasets.md``)."""

from __future__ import annotations

from pathlib import Path

from mammo.data.datasets.common import Density, LabelTable, finish, laterality_code, read_table
from mammo.data.datasets.registry import register

VINDR_SPLIT = {"training": "train", "test": "test"}


@register("vindr")
def read_vindr(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """VinDr-Mammo ``breast-level_annotations.csv`` (or ``finding_annotations.csv``, one row per
    finding: de-duplicated per image): ``<dicom_root>/<study_id>/<image_id>.dicom`` (``images``);
    ``DENSITY A``-``D``; the official ``test`` split is the locked test split (validation is drawn
    from ``training``). ``study_id`` identifies an exam, not a patient: the splits group by exam."""
    [path] = files
    frame = read_table(
        path, [["study_id"], ["image_id"], ["laterality"], ["view_position"], ["breast_density"], ["split"]]
    )
    density = Density(path, "breast_density", bad)
    rows, excluded, seen = [], [], {}
    for r in frame.itertuples(index=False):
        if r.image_id in seen:
            if seen[r.image_id] != r.breast_density:
                bad(
                    f"{path}: row {r.csv_row}: image {r.image_id} has breast_density {r.breast_density!r}"
                    f" here and {seen[r.image_id]!r} on an earlier row",
                    row=r.csv_row,
                )
            continue
        seen[r.image_id] = r.breast_density
        split = VINDR_SPLIT.get(r.split.lower())
        if split is None:
            bad(
                f"{path}: row {r.csv_row}: unknown split {r.split!r} (expected training or test)",
                row=r.csv_row,
            )
            continue
        where = {"row": r.csv_row, "image_id": r.image_id}
        value = density.label(r.breast_density, r.csv_row, where, excluded)
        if value is None:
            continue
        rows.append(
            {
                "image_path": f"{r.study_id}/{r.image_id}.dicom",
                "density": value,
                "PatientID": r.study_id,  # no patient id is published
                "AccessionNumber": r.study_id,
                "laterality": laterality_code(r.laterality),
                "view": r.view_position,
                "split": split,
                "csv_row": r.csv_row,
            }
        )
    return finish(rows, excluded, [path])
