"""INbreast label files as published (``data=inbreast``; ``shared/spec/public-datasets.md``)."""

from __future__ import annotations

import re
from pathlib import Path

from mammo.data.datasets.common import Density, LabelTable, finish, laterality_code, read_table
from mammo.data.datasets.registry import register

INBREAST_FILE = re.compile(
    r"^(?P<name>[^_]+)_(?P<patient>[^_]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.dcm$"
)


@register("inbreast")
def read_inbreast(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """INbreast ``INbreast.csv`` (semicolon-separated): ``File Name`` matches
    ``<dicom_root>/<File Name>_<patient>_MG_<L|R>_<CC|ML>_ANON.dcm`` (``AllDICOMs``; the file says
    ``ML`` where the CSV says ``MLO``); the patient comes from the file name; ``ACR`` 1-4, blank
    or space-padded (blank: left out)."""
    [path] = files
    frame = read_table(path, [["File Name"], ["ACR"], ["Laterality"], ["View"]])
    density = Density(path, "ACR", bad)
    index = {}
    if dicom_root.is_dir():
        for p in dicom_root.iterdir():
            match = INBREAST_FILE.match(p.name)
            if match:
                index[match["name"]] = (p.name, match)
    rows, excluded = [], []
    for r in frame.to_dict("records"):
        row, name = int(r["csv_row"]), r["File Name"]
        value = density.label(r["ACR"], row, {"row": row, "File Name": name}, excluded)
        if value is None:
            continue
        if name not in index:
            bad(
                f"{path}: row {row}: no {name}_*_MG_*_ANON.dcm in {dicom_root}",
                row=row,
                **{"File Name": name},
            )
            continue
        file_name, match = index[name]
        rows.append(
            {
                "image_path": file_name,
                "density": value,
                "PatientID": match["patient"],
                "AccessionNumber": f"{match['patient']}_{r.get('Acquisition date', '')}".rstrip("_"),
                "laterality": laterality_code(r["Laterality"] or match["side"]),
                "view": r["View"] or {"ML": "MLO"}.get(match["view"], match["view"]),
                "split": "",
                "csv_row": row,
            }
        )
    return finish(rows, excluded, [path])
