"""Public density datasets read as published: RSNA, VinDr-Mammo, CBIS-DDSM, EMBED, INbreast.

Each reader turns a dataset's own label file(s) (``../shared/spec/public-datasets.md``) into one
table of images with paths relative to ``data.dicom_root``: columns ``image_path``,
``density`` (1-4), ``PatientID``, ``AccessionNumber``, ``laterality`` (L/R), ``view``, ``split``
(the dataset's official split, or empty), ``csv_row``; plus the rows it left out with a reason
(``excluded``: no usable density, male, not a 2D full-field image, ...). ``mammo.data.labels``
then checks and hashes the files exactly as for a user's own CSV.

>>> sorted(READERS)
['cbis_ddsm', 'embed', 'inbreast', 'rsna', 'vindr']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.data.tables import read_csv_table
from mammo.errors import DataError

COLUMNS = ["image_path", "density", "PatientID", "AccessionNumber", "laterality", "view", "split", "csv_row"]
LETTERS = {"A": 1, "B": 2, "C": 3, "D": 4}


@dataclass
class LabelTable:
    """What a reader gives back (see module docstring)."""

    frame: pd.DataFrame
    excluded: list[dict] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)


def read_table(path: Path, required: list[list[str]]) -> pd.DataFrame:
    """A label file as strings (blank cells stay ``""``), headers stripped; each entry of
    ``required`` lists the accepted spellings of one column, the first present is renamed to the
    first spelling."""
    path = Path(path)
    frame = read_csv_table(path, what="label file")
    missing = []
    for spellings in required:
        found = next((s for s in spellings if s in frame.columns), None)
        if found is None:
            missing.append(" / ".join(spellings))
        elif found != spellings[0]:
            frame = frame.rename(columns={found: spellings[0]})
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(frame.columns)}")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    frame["csv_row"] = range(2, len(frame) + 2)
    return frame


class Density:
    """Map one dataset's density vocabulary to 1-4; ``None`` with a reason for rows left out."""

    def __init__(self, path: Path, column: str, bad) -> None:
        self.path, self.column, self.bad = path, column, bad

    def label(self, raw: str, row: int, where: dict, excluded: list[dict], exclude=None) -> int | None:
        """The density of a row, or ``None`` (the row left out: recorded in ``excluded`` with
        ``where`` and the reason, unless it was a bad value, which ``bad`` handles)."""
        value, reason = self(raw, row, exclude)
        if value is None and reason:
            excluded.append({**where, "reason": reason})
        return value

    def __call__(self, raw: str, row: int, exclude: dict[str, str] | None = None) -> tuple[int | None, str]:
        text = raw.strip().upper().removeprefix("DENSITY").strip()
        if text.endswith(".0"):
            text = text[:-2]
        if text in ("", "NAN"):
            return None, f"no density ({self.column} empty)"
        if exclude and text in exclude:
            return None, exclude[text]
        if text in LETTERS:
            return LETTERS[text], ""
        if text in ("1", "2", "3", "4"):
            return int(text), ""
        self.bad(f"{self.path}: row {row}: unknown {self.column} {raw!r}", row=row, file=self.path.name)
        return None, ""


def _side(value: str) -> str:
    """``L``/``R`` from L, R, LEFT, RIGHT (any case); anything else unchanged."""
    text = value.strip().upper()
    return {"LEFT": "L", "RIGHT": "R"}.get(text, text)


def _finish(rows: list[dict], excluded: list[dict], files: list[Path]) -> LabelTable:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return LabelTable(frame=frame, excluded=excluded, label_files=files)


# --------------------------------------------------------------------------------------- RSNA
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
                "laterality": _side(r.laterality),
                "view": r.view,
                "split": "",
                "csv_row": r.csv_row,
            }
        )
    return _finish(rows, excluded, [path])


# ------------------------------------------------------------------------------------ VinDr
VINDR_SPLIT = {"training": "train", "test": "val"}


def read_vindr(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """VinDr-Mammo ``breast-level_annotations.csv`` (or ``finding_annotations.csv``, one row per
    finding: de-duplicated per image): ``<dicom_root>/<study_id>/<image_id>.dicom`` (``images``);
    ``DENSITY A``-``D``; the official ``training``/``test`` split becomes train/val. ``study_id``
    identifies an exam, not a patient: the splits group by exam."""
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
                "laterality": _side(r.laterality),
                "view": r.view_position,
                "split": split,
                "csv_row": r.csv_row,
            }
        )
    return _finish(rows, excluded, [path])


# -------------------------------------------------------------------------------- CBIS-DDSM
def read_cbis_ddsm(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """CBIS-DDSM case description CSVs (mass/calc, train/test): one row per abnormality,
    de-duplicated per image; density 1-4 (``breast_density`` or ``breast density``), ``0`` left
    out. The CSV's ``image file path`` (``<case>/<StudyUID>/<SeriesUID>/000000.dcm``) is used if it
    exists under ``dicom_root``; otherwise the case folder's ``*full mammogram images*`` DICOM
    (the layout NBIA downloads have today)."""
    rows, excluded, seen = [], [], {}
    locate = _CbisLocator(dicom_root)
    for path in files:
        frame = read_table(
            path,
            [
                ["patient_id"],
                ["breast_density", "breast density"],
                ["left or right breast"],
                ["image view"],
                ["image file path"],
            ],
        )
        density = Density(path, "breast density", bad)
        for r in frame.to_dict("records"):
            csv_path = r["image file path"].strip().replace("\\", "/")
            row = int(r["csv_row"])
            if csv_path in seen:
                continue  # another abnormality of the same image
            seen[csv_path] = row
            where = {"file": path.name, "row": row, "image": csv_path}
            value = density.label(
                r["breast_density"], row, where, excluded, exclude={"0": "invalid density 0"}
            )
            if value is None:
                continue
            found = locate(csv_path)
            if found is None:
                bad(
                    f"{path}: row {row}: image {csv_path!r} not found under {dicom_root} "
                    "(neither that path nor a '*full mammogram images*' DICOM in its case folder)",
                    row=row,
                    file=path.name,
                )
                continue
            case = csv_path.split("/")[0]
            rows.append(
                {
                    "image_path": found,
                    "density": value,
                    "PatientID": r["patient_id"],
                    "AccessionNumber": case,
                    "laterality": _side(r["left or right breast"]),
                    "view": r["image view"],
                    "split": "",
                    "csv_row": row,
                }
            )
    return _finish(rows, excluded, list(files))


class _CbisLocator:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, csv_path: str) -> str | None:
        if (self.root / csv_path).is_file():
            return csv_path
        case = self.root / csv_path.split("/")[0]
        if not case.is_dir():
            return None
        found = sorted(p for p in case.glob("*/*full mammogram images*/*.dcm") if p.is_file())
        return found[0].relative_to(self.root).as_posix() if len(found) == 1 else None


# ------------------------------------------------------------------------------------ EMBED
EMBED_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"


def read_embed(files: list[Path], dicom_root: Path, bad, path_prefix: str = EMBED_PREFIX, **_) -> LabelTable:
    """EMBED clinical + metadata tables: images (metadata rows) joined to their exam's ``tissueden``
    (clinical rows) on ``empi_anon``, ``acc_anon`` and side (clinical ``side`` equal to
    ``ImageLateralityFinal``, or ``B``/empty). Only 2D full-field images (``FinalImageType`` 2D,
    no ``spot_mag``); ``tissueden`` 5 (male) and empty are left out. ``anon_dicom_path`` loses
    ``path_prefix`` and is read under ``dicom_root`` (``<root>/images``)."""
    clinical_path, meta_path = _embed_files(files)
    clinical = read_table(clinical_path, [["empi_anon"], ["acc_anon"], ["tissueden"], ["side"]])
    meta = read_table(
        meta_path,
        [
            ["anon_dicom_path"],
            ["empi_anon"],
            ["acc_anon"],
            ["FinalImageType"],
            ["ImageLateralityFinal"],
            ["ViewPosition"],
        ],
    )
    density = Density(clinical_path, "tissueden", bad)
    by_exam: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for r in clinical.itertuples(index=False):
        by_exam.setdefault((r.empi_anon, r.acc_anon), []).append((r.side.upper(), r.tissueden, r.csv_row))
    rows, excluded = [], []
    for r in meta.to_dict("records"):
        row, where = int(r["csv_row"]), {"file": meta_path.name, "row": int(r["csv_row"])}
        relpath = r["anon_dicom_path"].removeprefix(path_prefix).lstrip("/")
        if r["FinalImageType"].upper() != "2D":
            excluded.append({**where, "image": relpath, "reason": f"not a 2D image ({r['FinalImageType']})"})
            continue
        if r.get("spot_mag", "") not in ("", "0", "0.0", "nan"):
            excluded.append({**where, "image": relpath, "reason": "spot compression / magnification view"})
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
                "laterality": _side(side),
                "view": r["ViewPosition"],
                "split": "",
                "csv_row": row,
            }
        )
    return _finish(rows, excluded, [clinical_path, meta_path])


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


# --------------------------------------------------------------------------------- INbreast
INBREAST_FILE = re.compile(
    r"^(?P<name>[^_]+)_(?P<patient>[^_]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.dcm$"
)


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
                "laterality": _side(r["Laterality"] or match["side"]),
                "view": r["View"] or {"ML": "MLO"}.get(match["view"], match["view"]),
                "split": "",
                "csv_row": row,
            }
        )
    return _finish(rows, excluded, [path])


READERS: dict[str, Callable[..., LabelTable]] = {
    "rsna": read_rsna,
    "vindr": read_vindr,
    "cbis_ddsm": read_cbis_ddsm,
    "embed": read_embed,
    "inbreast": read_inbreast,
}


def read_public(name: str, files, dicom_root: Path, bad, **options) -> LabelTable:
    """Read dataset ``name``'s label files (one path or a list)."""
    if name not in READERS:
        raise DataError(f"data.dataset={name!r}: expected one of {', '.join(sorted(READERS))}")
    files = [Path(f) for f in ([files] if isinstance(files, str | Path) else files)]
    return READERS[name](files, Path(dicom_root), bad, **options)
