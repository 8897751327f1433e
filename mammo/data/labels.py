"""Read labels: a label file's rows -> the checked sample table (one row per DICOM image).

**The CSV reader.** The one reader of the tables users hand in (label CSVs, public datasets'
label files, split CSVs).

Cells are read as strings (blank cells stay ``""``) with stripped headers; the separator (comma,
semicolon, tab) is sniffed. Text must be UTF-8, with or without the byte-order mark that Excel's
"CSV UTF-8" writes; any other encoding gets one line naming the file and what to save it as.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
>>> _ = path.write_bytes("\\ufeffAccessionNumber;Classification\\nA1;B\\n".encode("utf-8"))
>>> read_csv_table(path).columns.tolist()
['AccessionNumber', 'Classification']

**Densities.** BI-RADS density codes: 1-4 or A-D (and 5, an incomplete exam, where a dataset
has it).

**A user's label CSV.** Its rows checked, repeated rows merged, and each row's image file(s).

Two layouts:

* accession folders (``classificacao.csv``): ``AccessionNumber`` and ``Classification`` (BI-RADS
  density 1-4 or A-D; 5 means "not classifiable" and is excluded unless asked for). Every DICOM
  under ``dicom_root/<AccessionNumber>/`` is one sample with that exam's label.
* image paths: a CSV with an ``image_path`` column (relative to ``dicom_root``, or to the CSV's
  folder when ``dicom_root`` is unset) and the label column; one row per image.

**The sample table.** A user's CSV (:func:`load_samples`) -> one row per DICOM image, its file
checked and hashed by :mod:`mammo.data.scan`. A public dataset's label files
(``data=rsna|vindr|cbis_ddsm|embed|inbreast``) are read by ``mammo.data.datasets`` and then go
through the same file checks (:func:`mammo.data.datasets.load_public`); the data module picks one.

Optional columns: ``PatientID`` (else the DICOM header's, else the accession stands in), and the
laterality and view columns named in the config (else the DICOM header's tags). Every file's
header is checked and its content hashed (for ``data_manifest.json`` and the cache key).
"""

from __future__ import annotations

import codecs
import csv as csv_module
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.core.errors import DataError
from mammo.data.scan import (
    SAMPLE_COLUMNS,
    HashIndex,
    PatientSource,
    duplicate_groups,
    patient_ids_record,
    scan_files,
)
from mammo.data.settings import DEFAULT_VIEWS, BadInput, LabelColumns, refused

# -- the CSV reader -----------------------------------------------------------------------------------
SAVE_AS = "save it from Excel as 'CSV UTF-8 (Comma delimited)'"


def read_csv_table(path: str | Path, key: str = "data.csv", what: str = "label CSV") -> pd.DataFrame:
    """The table in ``path`` as strings.

    Args:
        key: the setting that named the file (for the not-found message).
        what: what the file is (``label CSV``, ``split CSV``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: {what} not found: {path}")
    text = decode_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=None, engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv_module.Error) as exc:
        raise DataError(f"{path}: cannot parse CSV ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def decode_text(path: Path) -> str:
    """The file's text: UTF-8 (a leading byte-order mark dropped), or a one-line error."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{path}: the file is UTF-16 text (Excel's 'Unicode Text'); {SAVE_AS}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text (an Excel 'CSV' in the "
            f"computer's own encoding?); {SAVE_AS}"
        ) from None


# -- densities ----------------------------------------------------------------------------------------
DENSITY_CODES = {"1": 1, "2": 2, "3": 3, "4": 4, "A": 1, "B": 2, "C": 3, "D": 4}


def normalize_density(raw) -> str:
    """A label cell as a code: upper case, ``DENSITY`` prefix and a float's ``.0`` dropped.

    >>> normalize_density(" density b"), normalize_density(3.0), normalize_density("")
    ('B', '3', '')
    """
    text = str(raw).strip().upper().removeprefix("DENSITY").strip()
    return text[:-2] if text.endswith(".0") else text


def parse_density(value, include_class_5: bool = False) -> int | None:
    """BI-RADS density code -> 1..4 (or 5); ``None`` for an excluded class 5; ``ValueError`` otherwise.

    >>> parse_density("B"), parse_density(" 3 "), parse_density(4.0), parse_density("5")
    (2, 3, 4, None)
    """
    text = normalize_density(value)
    if text == "5":
        return 5 if include_class_5 else None
    if text not in DENSITY_CODES:
        raise ValueError(text)
    return DENSITY_CODES[text]


# -- a user's label CSV -------------------------------------------------------------------------------
log = logging.getLogger("mammo.data")


def read_label_csv(
    csv: str | Path,
    id_column: str | None = "AccessionNumber",
    label_column: str = "Classification",
    include_class_5: bool = False,
    bad: BadInput | None = None,
    columns: tuple[str, ...] = (),
    key_column: str | None = None,
    frame: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Read and validate a label CSV; returns (rows with ``density`` and ``csv_row``, excluded rows).

    Args:
        columns: further columns that must be present.
        bad: what to do with a row whose label is unknown (default: raise).
        key_column: the column naming what a row labels (default ``id_column``): rows repeating
            a key are one sample; with conflicting labels they are bad input (see
            :func:`merge_repeated_rows`).
        frame: the file's table when the caller has read it already.
    """
    csv = Path(csv)
    bad = bad or BadInput("error")
    frame = read_csv_table(csv) if frame is None else frame.copy()
    missing = [c for c in dict.fromkeys((id_column, label_column, *columns)) if c and c not in frame.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; found: {', '.join(frame.columns)}")
    if frame.empty:
        raise DataError(f"{csv}: no rows")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    frame["csv_row"] = range(2, len(frame) + 2)  # 1-based line numbers after the header
    densities, known = [], []
    for index, row, raw in zip(frame.index, frame["csv_row"].tolist(), frame[label_column].tolist()):
        try:
            density = parse_density(raw, include_class_5)
        except ValueError:
            density = None
            key = _key(frame, index, id_column)
            bad(
                f"{csv}: row {row}{f' ({_where(key)})' if key else ''}: unknown {label_column} {raw!r}"
                " (expected 1-4 or A-D, or 5)",
                row=int(row),
                **key,
            )
        else:
            known.append(row)
        densities.append(density)
    frame["density"] = pd.Series(densities, index=frame.index, dtype=object)
    frame = frame[frame["csv_row"].isin(known)]
    frame = merge_repeated_rows(frame, key_column or id_column, label_column, csv, bad)
    excluded = [
        {"row": int(frame.at[i, "csv_row"]), **_key(frame, i, id_column), "reason": "class 5 excluded"}
        for i in frame.index[frame["density"].isna()]
    ]
    return frame[frame["density"].notna()].reset_index(drop=True), excluded


def _key(frame: pd.DataFrame, index, id_column: str | None) -> dict:
    return {id_column: frame.at[index, id_column]} if id_column else {}


def _where(key: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def merge_repeated_rows(
    frame: pd.DataFrame, key_column: str | None, label_column: str, csv: Path, bad: BadInput
) -> pd.DataFrame:
    """Rows that repeat a key (an accession folder, an image path) label the same images.

    With the same density they are kept once, with a warning; with different densities it is
    bad input naming the rows (or, with ``data.on_bad_file=skip``, all of them are left out and
    listed). ``density`` is ``None`` for class 5.
    """
    if not key_column or frame.empty:
        return frame
    repeated = frame[frame.duplicated(key_column, keep=False)]
    drop = []
    for key, rows in repeated.groupby(key_column, sort=False):
        lines = rows["csv_row"].tolist()
        where = f"rows {', '.join(map(str, lines))}"
        if rows["density"].astype(str).nunique() > 1:
            labels = ", ".join(f"{v!r} in row {r}" for r, v in zip(lines, rows[label_column]))
            bad(
                f"{csv}: {where}: {key_column}={key} is listed with conflicting {label_column} ({labels})",
                row=int(lines[0]),
                rows=[int(r) for r in lines],
                **{key_column: key},
            )
            drop += rows.index.tolist()
        else:
            log.warning(
                "%s: %s: %s=%s is listed %d times with the same %s; used once",
                csv,
                where,
                key_column,
                key,
                len(lines),
                label_column,
            )
            drop += rows.index[1:].tolist()
    return frame.drop(index=drop)


def accession_folder_rows(frame: pd.DataFrame, root: Path, id_column: str, bad: BadInput) -> list[dict]:
    if not root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {root}")
    rows = []
    for i, (acc, row) in enumerate(zip(frame[id_column].tolist(), frame["csv_row"].astype(int).tolist())):
        folder = root / acc
        files = files_under(folder) if acc else []
        if not files and (not acc or not folder.is_dir()):
            bad(
                f"{folder}: accession folder missing for {id_column}={acc} (row {row})",
                row=row,
                **{id_column: acc},
            )
            continue
        if not files:
            bad(
                f"{folder}: accession folder is empty ({id_column}={acc}, row {row})",
                row=row,
                **{id_column: acc},
            )
            continue
        for path in files:
            if not is_utf8(path):  # pyarrow, CSV and JSON writers all need a text name
                shown = os.fsencode(path).decode("utf-8", "backslashreplace")
                bad(
                    f"{shown}: the file name is not UTF-8 text ({id_column}={acc}, row {row}); rename it",
                    row=row,
                    path=shown,
                )
                continue
            rows.append({"frame_row": i, "path": path, "AccessionNumber": acc})
    return rows


def is_utf8(path: str) -> bool:
    r"""Whether a path read from the disk is text (bytes that are not UTF-8 come back as surrogates).

    >>> is_utf8("A1/CC.dcm"), is_utf8(os.fsdecode(b"A1/caf\xe9.dcm"))
    (True, False)
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def files_under(folder: Path) -> list[str]:
    """The files below ``folder`` (any depth; hidden files left out), in path order; ``[]`` when
    it is missing. One ``scandir`` per directory: ``Path.rglob`` plus ``is_file`` stat every
    entry again, which was most of a second run's start-up."""
    found: list[str] = []

    def visit(directory: str) -> None:
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    visit(entry.path)
                elif entry.is_file() and not entry.name.startswith("."):
                    found.append(entry.path)

    visit(str(folder))
    return sorted(found, key=lambda p: p.split(os.sep))


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies inside ``root``, read as written (``..`` resolved, links not followed:
    a linked folder inside the root is the user's choice).

    >>> is_inside(Path("/data/a/../b/x.dcm"), Path("/data")), is_inside(Path("/data/../etc/x"), Path("/data"))
    (True, False)
    """
    inside, folder = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return inside.startswith(folder.rstrip(os.sep) + os.sep)


def image_path_rows(
    frame: pd.DataFrame, csv: Path, root: Path, path_column: str, id_column: str, bad: BadInput
) -> list[dict]:
    rows, seen = [], {}
    for i, relpath in enumerate(frame[path_column].tolist()):
        row = int(frame.at[i, "csv_row"])
        path = root / relpath
        if relpath and not is_inside(path, root):
            where = f"{csv}: row {row}: {path_column} {relpath!r}"
            bad(f"{where} is outside {root}: images must lie inside data.dicom_root", row=row, path=relpath)
            continue
        if not relpath or not path.is_file():
            bad(f"{csv}: row {row}: {path_column} {relpath!r} not found under {root}", row=row, path=relpath)
            continue
        if path in seen:
            raise DataError(f"{csv}: row {row}: {path_column} {relpath!r} already listed in row {seen[path]}")
        seen[path] = row
        acc = frame.at[i, id_column] if id_column in frame.columns else ""
        rows.append({"frame_row": i, "path": path, "AccessionNumber": acc})
    return rows


# -- the sample table ---------------------------------------------------------------------------------
@dataclass
class Samples:
    """The images of a dataset with 0-based labels, plus where they came from and what was left out.

    ``excluded`` holds rows left out by rule (class 5); ``skipped`` holds bad rows and files left
    out because ``data.on_bad_file=skip``. Both are lists of records with a ``reason``.
    """

    table: pd.DataFrame
    class_labels: list[int]
    source: dict = field(default_factory=dict)
    excluded: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    """Identical files under two patients or two labels (:func:`~mammo.data.scan.duplicate_groups`)."""
    patient_ids: dict = field(default_factory=dict)
    """``data.patient_id`` and how many images took their id from where
    (:class:`~mammo.data.scan.PatientSource`)."""
    exams_with_several_patients: list[dict] = field(default_factory=list)
    """Exams whose images carry several patient ids
    (:func:`~mammo.data.scan.several_patients_per_exam`)."""
    readings: dict = field(default_factory=dict)
    """``data.readings``' record: the readings files and the labels they changed
    (:func:`~mammo.readings.adjudication.apply_readings`)."""

    def check_every_class(self, num_classes: int) -> None:
        """A model of ``num_classes`` classes needs images of each."""
        empty = [c for i, c in enumerate(self.class_labels) if not (self.table["label"] == i).any()]
        if empty:
            raise DataError(
                f"data: density class(es) {empty} have no samples in {self.source['csv']} "
                f"({len(self.table)} usable images); a {num_classes}-class model needs images of every class"
            )

    def drop(self, rows: dict[int, str]) -> None:
        """Skip table rows (index -> reason) found bad after loading (e.g. undecodable pixels)."""
        for index, reason in rows.items():
            self.skipped.append({"path": self.table.at[index, "relpath"], "reason": reason})
        self.table = self.table.drop(index=list(rows)).reset_index(drop=True)


ON_DUPLICATE = ("warn", "error", "drop")


def check_duplicates(samples: Samples, rule: str) -> None:
    """Identical files under two patients or two labels, before any split: named on one WARNING
    line (``warn``), refused (``error``) or kept once each, the first image of each group
    (``drop``); recorded in ``samples.duplicates`` (the manifest's ``duplicates``)."""
    if rule not in ON_DUPLICATE:
        raise DataError(f"data.on_duplicate={rule!r}: expected one of {', '.join(ON_DUPLICATE)}")
    table = samples.table.assign(label=np.asarray(samples.class_labels)[samples.table["label"].to_numpy()])
    groups = duplicate_groups(table)
    if not groups:
        return
    first = groups[0]
    said = (
        f"{len(groups)} group(s) of identical files under two patients or two labels, which a "
        f"patient-grouped split can put on both sides (e.g. {' = '.join(first['images'][:3])}: patients "
        f"{', '.join(first['patients'])}, labels {', '.join(map(str, first['labels']))}; "
        "all in data_manifest.json)"
    )
    if rule == "error":
        raise DataError(f"data.on_duplicate=error: {said}")
    if rule == "warn":
        log.warning("%s; data.on_duplicate=drop keeps one copy of each, =error stops", said)
    else:
        dropped = {image for group in groups for image in group["images"][1:]}
        samples.table = samples.table[~samples.table["image_id"].isin(dropped)].reset_index(drop=True)
        log.warning("%s; data.on_duplicate=drop kept the first image of each, dropped %d", said, len(dropped))
    samples.duplicates = [{**g, "kept": g["images"][0] if rule == "drop" else None} for g in groups]


def load_samples(
    csv: str | Path,
    dicom_root: str | Path | None,
    *,
    columns: LabelColumns | None = None,
    include_class_5: bool = False,
    on_bad_file: str = "error",
    hash_index=None,
    workers: int = 4,
    views: list[str] | None = DEFAULT_VIEWS,
    patient_id: str = "auto",
) -> Samples:
    """The checked, hashed samples of a user's label CSV, in whichever layout it uses (see module
    docstring); a public dataset's label files go through :func:`mammo.data.datasets.load_public`.

    Args:
        columns: the label CSV's column names.
        views: the views to train on (``ViewPosition`` or the view column); other views are
            excluded and counted, unknown ones kept; ``None`` keeps every view.
        hash_index: a :class:`~mammo.data.scan.HashIndex`; workers: threads for headers and hashes.
        patient_id: where each image's patient id comes from (``data.patient_id``, see
            :class:`~mammo.data.scan.PatientSource`).
    """
    csv, columns, bad = Path(csv), columns or LabelColumns(), BadInput(on_bad_file)
    hash_index = hash_index or HashIndex(None)
    frame = read_csv_table(csv)
    patients = PatientSource.parse(patient_id, columns.patient_column)
    patients.check_columns(csv, frame.columns)
    by_path = columns.path_column in frame.columns
    key = columns.path_column if by_path else columns.id_column
    optional = (columns.laterality_column, columns.view_column, *columns.subgroup_columns)
    frame, excluded = read_label_csv(
        csv, None if by_path else key, columns.label_column, include_class_5, bad,
        columns=tuple(c for c in optional if c), key_column=key, frame=frame,
    )  # fmt: skip
    root, rows = image_rows(frame, csv, dicom_root, columns, by_path, bad)
    table = scan_files(
        pd.DataFrame(rows), frame, root, patients, columns.laterality_column, columns.view_column,
        bad, hash_index, workers, extra=columns.subgroup_columns,
    )  # fmt: skip
    table = exclude_views(table, views, excluded)
    if table.empty:
        raise DataError(f"{csv}: no usable images ({refused(bad.records, excluded)})")
    table["label"] = table["label"] - 1
    patient_ids, split_exams = patient_ids_record(table, patients)
    return Samples(
        table=table[[*SAMPLE_COLUMNS, *columns.subgroup_columns]],
        class_labels=[1, 2, 3, 4, 5] if include_class_5 else [1, 2, 3, 4],
        source={
            "csv": str(csv),
            "dicom_root": str(root),
            "layout": "image_path" if by_path else "accession_folders",
        },
        excluded=excluded,
        skipped=bad.records,
        patient_ids=patient_ids,
        exams_with_several_patients=split_exams,
    )


def image_rows(frame: pd.DataFrame, csv: Path, dicom_root, columns: LabelColumns, by_path: bool, bad):
    """The DICOM folder and one row per image of a label CSV: its image paths, or the files in
    each accession's folder."""
    if by_path:
        root = Path(dicom_root) if dicom_root else csv.parent
        rows = image_path_rows(frame, csv, root, columns.path_column, columns.id_column, bad)
    else:
        if not dicom_root:
            raise DataError("data.dicom_root: needed for a CSV without an image_path column")
        root = Path(dicom_root)
        rows = accession_folder_rows(frame, root, columns.id_column, bad)
    if not root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {root}")
    return root, rows


def exclude_views(table: pd.DataFrame, views: list[str] | None, excluded: list[dict]) -> pd.DataFrame:
    """Leave out the images whose known view is not one of ``views`` (``data.views``), recording
    each in ``excluded``; ``None`` keeps all.

    >>> t = pd.DataFrame({"relpath": ["a", "b", "c"], "view": ["CC", "AT", ""]})
    >>> left = []; exclude_views(t, ["CC", "MLO"], left)["relpath"].tolist(), left
    (['a', 'c'], [{'path': 'b', 'reason': 'view AT not in data.views'}])
    """
    if views is None or table.empty:
        return table
    wanted = {str(v).strip().upper() for v in views}
    view = table["view"].astype(str).str.strip().str.upper()
    out = (view != "") & ~view.isin(wanted)
    for relpath, name in zip(table.loc[out, "relpath"], view[out]):
        excluded.append({"path": relpath, "reason": f"view {name} not in data.views"})
    return table[~out].reset_index(drop=True)
