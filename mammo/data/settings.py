"""The data config in groups: where the labels are, how the split is made, how images are loaded.

``conf/data/*.yaml`` stays one flat node (``data.csv``, ``data.val_fraction``, ``data.cache_mode``,
...); :meth:`mammo.data.datamodule.DensityDataModule.from_config` sorts its keys into these groups.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, field, fields

from mammo.core.errors import DataError

CACHE_MODES = ("none", "memory", "disk")
DEFAULT_VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class LabelColumns:
    """The columns of a user's label CSV (the DICOM header stands in for missing ones)."""

    id_column: str = "AccessionNumber"
    label_column: str = "Classification"
    patient_column: str = "PatientID"
    path_column: str = "image_path"  # its presence in the CSV selects the image-path layout
    laterality_column: str | None = None
    view_column: str | None = None
    subgroup_columns: tuple[str, ...] = ()  # label-file columns whose values are subgroups (site, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subgroup_columns", tuple(self.subgroup_columns or ()))


@dataclass(frozen=True)
class LabelSource:
    """Where the labelled images are: a label CSV + DICOM folder, a public dataset's label files,
    or the generated demo set (``demo``: ``n_patients``, ``seed``, ``height``, ``width``, ``dir``)."""

    csv: str | list[str] | None = None
    dicom_root: str | None = None
    demo: dict | None = None
    dataset: str | None = None
    dataset_options: dict = field(default_factory=dict)
    root: str | None = None  # a dataset's folder (the data=<dataset> configs derive csv/dicom_root)
    columns: LabelColumns = field(default_factory=LabelColumns)
    include_class_5: bool = False
    num_classes: int = 4
    on_bad_file: str = "error"
    on_duplicate: str = "warn"  # identical files under two patients or labels: warn | error | drop
    patient_id: str = "auto"  # where patient ids come from: auto | column | header[:<keyword>] | accession
    readings: tuple[str, ...] = ()  # readers' readings (mammo.readings.adjudication) that change labels
    readings_rule: str = "majority"
    views: tuple[str, ...] | None = DEFAULT_VIEWS


@dataclass(frozen=True)
class SplitSettings:
    """How test and validation images are chosen (:mod:`mammo.data.datamodule`): the locked test split
    (a preset ``split_csv``'s test rows, a dataset's ``official_split``, or ``test_fraction``),
    then validation among the rest: patient-grouped and class-stratified (``val_fraction``,
    ``split_seed``), the preset's val rows, or CV fold ``cv_fold`` of ``cv_folds``; ``subset``
    trains on part of the training split."""

    val_fraction: float = 0.2
    test_fraction: float | None = None
    split_seed: int = 42
    split_csv: str | None = None
    official_split: bool = True
    cv_folds: int | None = None
    cv_fold: int | None = None
    subset: float | None = None

    def __post_init__(self) -> None:
        if self.cv_folds is not None and self.split_csv:
            raise DataError("data.split_csv and cv=kfold are exclusive: the folds are the split")


@dataclass(frozen=True)
class LoaderSettings:
    """How images reach the model: batches, worker processes, the preprocessed-image cache,
    augmentation, the training order's ``seed`` and fused embeddings. No defaults here: each
    setting's one default is in ``conf/data/dicom_csv.yaml`` (a caller without the config passes
    them all). The one check of ``cache_mode``."""

    batch_size: int
    num_workers: int
    cache_mode: str
    cache_dir: str | None
    train_augment: bool
    seed: int
    embeddings_dir: str | None = None

    def batch_workers(self) -> int:
        """Loader processes that read the batches: none where every image is cached (the memory
        or disk cache; the fill stops at, or drops, any image it cannot make), as a cached image
        is read, not decoded, and a worker would only add the hand-over of each batch across a
        process boundary (``scripts/bench_cache.py``: several times slower); ``num_workers`` where
        each batch is decoded from the DICOM files (``cache_mode=none``). The fill always uses
        ``num_workers``."""
        return self.num_workers if self.cache_mode == "none" else 0

    def read_threads(self) -> int:
        """Threads that read each batch's entries from the disk cache, in the training process:
        ``num_workers`` (at least one). Reading is a copy from the page cache, and threads copy in
        parallel where one alone is bound by a core (``scripts/bench_cache.py``)."""
        return max(1, self.num_workers)

    def __post_init__(self) -> None:
        if self.cache_mode not in CACHE_MODES:
            raise DataError(f"data.cache_mode={self.cache_mode!r}: expected one of {', '.join(CACHE_MODES)}")
        if self.cache_mode == "disk" and not self.cache_dir:
            raise DataError("data.cache_mode=disk needs data.cache_dir")


def take(kind, settings: dict):
    """An instance of dataclass ``kind`` from the keys of ``settings`` it has (removed from it);
    a setting it needs and ``settings`` lacks is named."""
    missing = [
        f.name
        for f in fields(kind)
        if f.name not in settings and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise DataError(
            f"data.{missing[0]}: missing (each data setting's default is in conf/data/dicom_csv.yaml)"
        )
    return kind(**{f.name: settings.pop(f.name) for f in fields(kind) if f.name in settings})


ON_BAD_FILE = ("error", "skip")


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


def refusal_kind(reason: str) -> str:
    """What a bad file's or row's reason says, without where and without its details.

    >>> refusal_kind("/d/A1/CT.dcm: Modality CT is not a mammogram (accepted: MG, CR, DX, OT)")
    'Modality CT is not a mammogram'
    >>> refusal_kind("labels.csv: row 3: unknown density 'X'")
    "unknown density 'X'"
    """
    return reason.split(" (", 1)[0].rsplit(": ", 1)[-1].strip()


def counted_refusals(records: list[dict], named: int = 3) -> str:
    """The reasons files and rows were refused, counted, most frequent first, with the first
    ones named: what a run that refuses files says on the console and in run.log.

    >>> counted_refusals([{"path": "a", "reason": "a: Modality CT is not a mammogram (accepted: MG)"},
    ...                   {"path": "b", "reason": "b: Modality CT is not a mammogram (accepted: MG)"},
    ...                   {"row": 7, "reason": "l.csv: row 7: unknown density 'X'"}])
    "2 Modality CT is not a mammogram, 1 unknown density 'X'; first: a, b, row 7"
    """
    counts = Counter(refusal_kind(r["reason"]) for r in records)
    first = [str(r.get("path") or f"row {r.get('row', '?')}") for r in records[:named]]
    listed = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    return f"{listed}; first: {', '.join(first)}{' ...' if len(records) > named else ''}"


def refused(skipped: list[dict], excluded: list[dict]) -> str:
    """Why a label table gave no usable image: the skipped and the excluded, each counted by reason.

    >>> refused([{"path": "a", "reason": "a: Modality CT is not a mammogram (accepted: MG)"}], [])
    '1 skipped: 1 Modality CT is not a mammogram; first: a'
    """
    parts = [
        f"{len(r)} {what}: {counted_refusals(r)}"
        for what, r in (("skipped", skipped), ("excluded", excluded))
        if r
    ]
    return " / ".join(parts) or "the label table lists no image"


def available_memory() -> int | None:
    """Bytes of RAM the system can give without swapping (``MemAvailable``), ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory_cache_fits(images: int, shape: tuple[int, int], available: int | None) -> None:
    """``data.cache_mode=memory`` holds every preprocessed image (float16) in RAM: refuse, naming
    the sizes, when that would take more than 80 % of the available memory."""
    height, width = shape
    needed = images * height * width * 2
    if available is not None and needed > 0.8 * available:
        raise DataError(
            f"data.cache_mode=memory: {images} images at {height}x{width} need {needed / 2**30:.1f} GiB "
            f"of RAM, {available / 2**30:.1f} GiB is available; use data.cache_mode=disk"
        )
