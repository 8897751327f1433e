"""Label files -> the sample table (one row per DICOM image), its files checked and hashed.

A user's own CSV is read by ``mammo.data.label_csv`` (accession-folder or image-path layout),
a public dataset's label files (``data=rsna|vindr|cbis_ddsm|embed|inbreast``) by
``mammo.data.datasets``; both then go through the same file checks here.

Optional columns: ``PatientID`` (else the DICOM header's, else the accession stands in), and the
laterality and view columns named in the config (else the DICOM header's tags). Every file's
header is checked and its content hashed (for ``data_manifest.json`` and the cache key).
"""

from __future__ import annotations

import gc
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo.core.errors import DataError
from mammo.data.datasets import read_public
from mammo.data.demo import ensure_demo_dataset
from mammo.data.label_csv import accession_folder_rows, image_path_rows, read_label_csv
from mammo.data.manifest import HashIndex
from mammo.data.scan import SAMPLE_COLUMNS, scan_files
from mammo.data.settings import DEFAULT_VIEWS, LabelColumns, LabelSource
from mammo.data.tables import BadInput, read_csv_table

log = logging.getLogger("mammo.data")


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


def label_files(source: LabelSource) -> tuple[Path | list[Path], Path | None]:
    """The label file(s) and DICOM folder of ``source`` (the demo set is generated on first use)."""
    if source.demo:
        d = source.demo
        root = ensure_demo_dataset(d["dir"], d["n_patients"], d["seed"], d["height"], d["width"])
        return root / "classificacao.csv", root / "archive"
    if not source.csv:
        raise DataError("data=dicom_csv needs data.csv=<labels.csv> (and data.dicom_root=<folder>)")
    csv = [Path(c) for c in source.csv] if isinstance(source.csv, list | tuple) else Path(source.csv)
    return csv, Path(source.dicom_root) if source.dicom_root else None


@contextmanager
def collections_paused():
    """No garbage collection while the sample table is built: the hash index holds a few objects
    per file, and every collection of the oldest generation walked all of them again (measured:
    3/4 of a second run's header step at 20,000 files). Collections resume afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_source(source: LabelSource, cache_dir: str | None, workers: int) -> Samples:
    """The samples of ``source``; file hashes are remembered in ``cache_dir`` when there is one."""
    csv, dicom_root = label_files(source)
    log.info("Loading data from %s", csv)
    with collections_paused():
        samples = load_samples(
            csv,
            dicom_root,
            columns=source.columns,
            include_class_5=source.include_class_5,
            on_bad_file=source.on_bad_file,
            hash_index=HashIndex(Path(cache_dir) / "file_hashes.json" if cache_dir else None),
            workers=max(2, workers),
            dataset=source.dataset,
            dataset_options=source.dataset_options,
            views=None if source.views is None else list(source.views),
        )
    if len(samples.class_labels) != source.num_classes:
        raise DataError(
            f"data.num_classes={source.num_classes} but the labels have {len(samples.class_labels)}"
            " classes (set data.num_classes=5 with data.include_class_5=true)"
        )
    return samples


def load_samples(
    csv: str | Path,
    dicom_root: str | Path | None,
    *,
    columns: LabelColumns | None = None,
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
        columns: the label CSV's column names (a public dataset's reader knows its own).
        views: the views to train on (``ViewPosition`` or the view column); images of other
            views are excluded and counted; ``None`` keeps every view. Images whose view is not
            known are kept.
        hash_index: a :class:`~mammo.data.manifest.HashIndex` (remembers file hashes).
        workers: threads for the header checks and hashing.
        dataset: a public dataset's name (``mammo.data.datasets``): ``csv`` is then its label
            file(s), read as published; the column arguments do not apply.
        dataset_options: further options of that dataset's reader.
    """
    hash_index = hash_index or HashIndex(None)
    if dataset:
        return _load_public(
            dataset, csv, dicom_root, dataset_options or {}, on_bad_file, hash_index, workers, views
        )
    columns = columns or LabelColumns()
    return _load_label_csv(
        Path(csv), dicom_root, columns, include_class_5, BadInput(on_bad_file), hash_index, workers, views
    )


def _load_label_csv(
    csv: Path, dicom_root, columns, include_class_5, bad, hash_index, workers, views
) -> Samples:
    """A user's label CSV (``mammo.data.label_csv``) -> its checked, hashed samples."""
    id_column, label_column, path_column = columns.id_column, columns.label_column, columns.path_column
    laterality_column, view_column = columns.laterality_column, columns.view_column
    frame = read_csv_table(csv)
    by_path = path_column in frame.columns
    optional = tuple(c for c in (laterality_column, view_column, *columns.subgroup_columns) if c)
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
        rows = image_path_rows(frame, csv, root, path_column, id_column, bad)
    else:
        if not dicom_root:
            raise DataError("data.dicom_root: needed for a CSV without an image_path column")
        root = Path(dicom_root)
        rows = accession_folder_rows(frame, root, id_column, bad)
    if not root.is_dir():
        raise DataError(f"data.dicom_root: folder not found: {root}")
    table = pd.DataFrame(rows)
    table = scan_files(
        table,
        frame,
        root,
        columns.patient_column,
        laterality_column,
        view_column,
        bad,
        hash_index,
        workers,
        extra=columns.subgroup_columns,
    )
    table = exclude_views(table, views, excluded)
    class_labels = [1, 2, 3, 4, 5] if include_class_5 else [1, 2, 3, 4]
    if table.empty:
        raise DataError(f"{csv}: no usable images ({len(bad.records)} skipped, {len(excluded)} excluded)")
    table["label"] = table["label"] - 1
    return Samples(
        table=table[[*SAMPLE_COLUMNS, *columns.subgroup_columns]],
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
    if not dicom_root or not Path(dicom_root).is_dir():
        raise DataError(f"data.dicom_root: folder not found: {dicom_root}")
    root = Path(dicom_root)
    bad = BadInput(on_bad_file)
    public = read_public(dataset, files, root, bad, **options)
    first = public.label_files[0]
    rows = image_path_rows(public.frame, first, root, "image_path", "AccessionNumber", bad)
    table = scan_files(
        pd.DataFrame(rows),
        public.frame,
        root,
        "PatientID",
        "laterality",
        "view",
        bad,
        hash_index,
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
