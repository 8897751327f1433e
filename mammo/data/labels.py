"""Label CSVs -> the sample table (one row per DICOM image).

Two layouts:

* accession folders (``classificacao.csv``): ``AccessionNumber`` and ``Classification`` (BI-RADS
  density 1-4 or A-D; 5 means "not classifiable" and is excluded unless asked for). Every DICOM
  under ``dicom_root/<AccessionNumber>/`` is one sample with that exam's label.
* image paths: a CSV with an ``image_path`` column (relative to ``dicom_root``, or to the CSV's
  folder when ``dicom_root`` is unset) and the label column; one row per image.

Public datasets (``data=rsna|vindr|cbis_ddsm|embed|inbreast``) are read from their own label
files by ``mammo.data.public`` and then go through the same file checks.

Optional columns: ``PatientID`` (else the DICOM header's, else the accession stands in), and the
laterality and view columns named in the config (else the DICOM header's tags). Every file's
header is checked and its content hashed (for ``data_manifest.json`` and the cache key).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.data.dicom import check_header
from mammo.data.tables import read_csv_table
from mammo.errors import DataError

log = logging.getLogger("mammo.data")
DENSITY_CODES = {"1": 1, "2": 2, "3": 3, "4": 4, "A": 1, "B": 2, "C": 3, "D": 4}
SAMPLE_COLUMNS = [
    "image_id",
    "path",
    "relpath",
    "AccessionNumber",
    "PatientID",
    "laterality",
    "view",
    "size",
    "sha256",
    "label",
]
ON_BAD_FILE = ("error", "skip")
DEFAULT_VIEWS = ("CC", "MLO")


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

    def drop(self, rows: dict[int, str]) -> None:
        """Skip table rows (index -> reason) found bad after loading (e.g. undecodable pixels)."""
        for index, reason in rows.items():
            self.skipped.append({"path": self.table.at[index, "relpath"], "reason": reason})
        self.table = self.table.drop(index=list(rows)).reset_index(drop=True)


class BadInput:
    """Raise a :class:`DataError` for a bad row/file, or record it when skipping."""

    def __init__(self, on_bad_file: str) -> None:
        if on_bad_file not in ON_BAD_FILE:
            raise DataError(f"data.on_bad_file={on_bad_file!r}: expected one of {', '.join(ON_BAD_FILE)}")
        self.skip = on_bad_file == "skip"
        self.records: list[dict] = []

    def __call__(self, message: str, **where) -> None:
        if not self.skip:
            raise DataError(message)
        self.records.append({**where, "reason": message})


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
    for index, row, raw in zip(frame.index, frame["csv_row"], frame[label_column]):
        key = _key(frame, index, id_column)
        try:
            density = parse_density(raw, include_class_5)
        except ValueError:
            density = None
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


def load_samples(
    csv: str | Path,
    dicom_root: str | Path | None,
    *,
    id_column: str = "AccessionNumber",
    label_column: str = "Classification",
    patient_column: str = "PatientID",
    path_column: str = "image_path",
    laterality_column: str | None = None,
    view_column: str | None = None,
    include_class_5: bool = False,
    on_bad_file: str = "error",
    hash_index=None,
    workers: int = 4,
    dataset: str | None = None,
    dataset_options: dict | None = None,
    views: list[str] | None = DEFAULT_VIEWS,
) -> Samples:
    """The sample table of a label CSV, in whichever layout it uses (see module docstring).

    Args:
        views: the views to train on (``ViewPosition`` or the view column); images of other
            views are excluded and counted; ``None`` keeps every view. Images whose view is not
            known are kept.
        hash_index: a :class:`~mammo.data.manifest.HashIndex` (remembers file hashes).
        workers: threads for the header checks and hashing.
        dataset: a public dataset's name (``mammo.data.public``): ``csv`` is then its label
            file(s), read as published; the column arguments do not apply.
        dataset_options: further options of that dataset's reader.
    """
    from mammo.data.manifest import HashIndex

    if dataset:
        return _load_public(
            dataset, csv, dicom_root, dataset_options or {}, on_bad_file, hash_index, workers, views
        )
    csv = Path(csv)
    bad = BadInput(on_bad_file)
    frame = read_csv_table(csv)
    by_path = path_column in frame.columns
    optional = tuple(c for c in (laterality_column, view_column) if c)
    frame, excluded = read_label_csv(
        csv,
        None if by_path else id_column,
        label_column,
        include_class_5,
        bad,
        columns=optional,
        key_column=path_column if by_path else id_column,
        frame=frame,
    )
    if by_path:
        root = Path(dicom_root) if dicom_root else csv.parent
        rows = _image_path_rows(frame, csv, root, path_column, id_column, bad)
    else:
        if not dicom_root:
            raise DataError("data.dicom_root: needed for a CSV without an image_path column")
        root = Path(dicom_root)
        rows = _accession_folder_rows(frame, root, id_column, bad)
    if not root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {root}")
    table = pd.DataFrame(rows)
    table = _scan_files(
        table,
        frame,
        root,
        patient_column,
        laterality_column,
        view_column,
        bad,
        hash_index or HashIndex(None),
        workers,
    )
    table = exclude_views(table, views, excluded)
    class_labels = [1, 2, 3, 4, 5] if include_class_5 else [1, 2, 3, 4]
    if table.empty:
        raise DataError(f"{csv}: no usable images ({len(bad.records)} skipped, {len(excluded)} excluded)")
    table["label"] = table["label"] - 1
    return Samples(
        table=table[SAMPLE_COLUMNS],
        class_labels=class_labels,
        source={
            "csv": str(csv),
            "dicom_root": str(root),
            "layout": "image_path" if by_path else "accession_folders",
        },
        excluded=excluded,
        skipped=bad.records,
    )


def _load_public(dataset, files, dicom_root, options, on_bad_file, hash_index, workers, views) -> Samples:
    from mammo.data.manifest import HashIndex
    from mammo.data.public import read_public

    if not dicom_root or not Path(dicom_root).is_dir():
        raise DataError(f"data.dicom_root: folder not found: {dicom_root}")
    root = Path(dicom_root)
    bad = BadInput(on_bad_file)
    public = read_public(dataset, files, root, bad, **options)
    first = public.label_files[0]
    rows = _image_path_rows(public.frame, first, root, "image_path", "AccessionNumber", bad)
    table = _scan_files(
        pd.DataFrame(rows),
        public.frame,
        root,
        "PatientID",
        "laterality",
        "view",
        bad,
        hash_index or HashIndex(None),
        workers,
        extra=("split",),
    )
    table = exclude_views(table, views, public.excluded)
    if table.empty:
        raise DataError(
            f"data={dataset}: no usable images in {', '.join(map(str, public.label_files))} under {root}"
            f" ({len(bad.records)} skipped, {len(public.excluded)} excluded)"
        )
    table["label"] = table["label"] - 1
    return Samples(
        table=table,
        class_labels=[1, 2, 3, 4],
        source={
            "dataset": dataset,
            "csv": str(first),
            "label_files": [str(f) for f in public.label_files],
            "dicom_root": str(root),
            "layout": dataset,
        },
        excluded=public.excluded,
        skipped=bad.records,
    )


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


def _accession_folder_rows(frame: pd.DataFrame, root: Path, id_column: str, bad: BadInput) -> list[dict]:
    if not root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {root}")
    rows = []
    for i, acc in enumerate(frame[id_column]):
        folder = root / acc
        row = int(frame.at[i, "csv_row"])
        if not acc or not folder.is_dir():
            bad(
                f"{folder}: accession folder missing for {id_column}={acc} (row {row})",
                row=row,
                **{id_column: acc},
            )
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            bad(
                f"{folder}: accession folder is empty ({id_column}={acc}, row {row})",
                row=row,
                **{id_column: acc},
            )
            continue
        for path in files:
            rows.append({"frame_row": i, "path": path, "AccessionNumber": acc})
    return rows


def _image_path_rows(
    frame: pd.DataFrame, csv: Path, root: Path, path_column: str, id_column: str, bad: BadInput
) -> list[dict]:
    rows, seen = [], {}
    for i, relpath in enumerate(frame[path_column]):
        row = int(frame.at[i, "csv_row"])
        path = root / relpath
        if not relpath or not path.is_file():
            bad(f"{csv}: row {row}: {path_column} {relpath!r} not found under {root}", row=row, path=relpath)
            continue
        if path in seen:
            raise DataError(f"{csv}: row {row}: {path_column} {relpath!r} already listed in row {seen[path]}")
        seen[path] = row
        acc = frame.at[i, id_column] if id_column in frame.columns else ""
        rows.append({"frame_row": i, "path": path, "AccessionNumber": acc})
    return rows


def _scan_files(
    table: pd.DataFrame,
    frame: pd.DataFrame,
    root: Path,
    patient_column: str,
    laterality_column: str | None,
    view_column: str | None,
    bad: BadInput,
    hash_index,
    workers: int,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check each file's header and hash it; fill patient, accession, laterality and view (and
    copy the ``extra`` columns of the label table)."""
    from concurrent.futures import ThreadPoolExecutor

    if table.empty:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, *extra, "frame_row"])

    def scan(path: Path):
        try:
            ds = check_header(path)
        except DataError as exc:
            return exc
        return ds, hash_index.sha256(path)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(scan, table["path"]))
    hash_index.save()
    out = []
    for (_, item), result in zip(table.iterrows(), results):
        relpath = Path(item["path"]).relative_to(root).as_posix()
        if isinstance(result, DataError):
            bad(str(result), path=relpath)
            continue
        ds, (size, sha) = result
        source = frame.loc[item["frame_row"]]
        acc = item["AccessionNumber"] or str(ds.get("AccessionNumber", "") or "") or Path(relpath).stem
        patient = source.get(patient_column, "") if patient_column else ""
        laterality = source.get(laterality_column, "") if laterality_column else ""
        view = source.get(view_column, "") if view_column else ""
        out.append(
            {
                "image_id": str(Path(relpath).with_suffix("").as_posix()),
                "path": str(item["path"]),
                "relpath": relpath,
                "AccessionNumber": acc,
                "PatientID": patient or str(ds.get("PatientID", "") or "") or acc,
                "laterality": (
                    laterality or str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
                ).upper(),
                "view": view or str(ds.get("ViewPosition", "") or ""),
                "size": size,
                "sha256": sha,
                "label": int(source["density"]),
                **{column: source.get(column, "") for column in extra},
            }
        )
    return pd.DataFrame(out, columns=[*SAMPLE_COLUMNS, *extra])
