"""A user's own label CSV: its rows checked, repeated rows merged, and each row's image file(s).

Two layouts:

* accession folders (``classificacao.csv``): ``AccessionNumber`` and ``Classification`` (BI-RADS
  density 1-4 or A-D; 5 means "not classifiable" and is excluded unless asked for). Every DICOM
  under ``dicom_root/<AccessionNumber>/`` is one sample with that exam's label.
* image paths: a CSV with an ``image_path`` column (relative to ``dicom_root``, or to the CSV's
  folder when ``dicom_root`` is unset) and the label column; one row per image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError
from mammo.data.density import parse_density
from mammo.data.tables import BadInput, read_csv_table

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
