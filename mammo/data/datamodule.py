"""Split and load: the sample table -> test, validation and training rows -> the loaders.

**The data module.** A LightningDataModule: labels -> checked, hashed samples -> split ->
preprocessed (cached) images -> loaders.

Images leave the loaders as ``[1, H, W]`` float16 tensors in [0, 1], as stored (training batches are
augmented on the device, float32 after it); the model normalises them, so a cached epoch moves half
the bytes of a float32 RGB tensor and never recomputes normalisation per image.

**The split.** Which images are test, validation and training: the locked test split comes first.

The test split is held out of training **and** of model selection: its images are in neither the
training nor the validation rows (nor any CV fold), so they never choose the best epoch, stop a
run early, prune a trial or score an HPO objective. It comes from, in this order:

1. a preset split CSV's ``test`` rows (``data.split_csv``);
2. the dataset's official test split (VinDr-Mammo's ``test``; ``data.official_split=true``);
3. ``data.test_fraction`` of the patients, grouped and class-stratified like the validation split
   and seeded by ``data.split_seed``.

Without any of them there is no test split. Validation is then drawn from the remaining rows: the
preset CSV's ``val`` rows, else ``data.val_fraction`` of the remaining patients.

**Patient-grouped splits.** Class-stratified train/val splits and folds (scikit-learn's
StratifiedGroupKFold).
"""

from __future__ import annotations

import gc
import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from mammo.artifacts.io import atomic_open
from mammo.core.errors import DataError, OutputError
from mammo.data.cache import (
    BatchAugmentation,
    BatchBuffers,
    DicomDataset,
    DiskCache,
    ImageSource,
    collate,
    fill_cache,
)
from mammo.data.datasets import load_public
from mammo.data.demo import ensure_demo_dataset
from mammo.data.embedding_rows import embedding_rows
from mammo.data.images import Preprocessing
from mammo.data.labels import Samples, check_duplicates, load_samples, read_csv_table
from mammo.data.order import EpochShuffle, LookaheadBatches
from mammo.data.scan import (
    SCANNER_COLUMNS,
    HashIndex,
    build_manifest,
    manifest_sha256,
    warn_of_split_exams,
)
from mammo.data.settings import (
    LabelColumns,
    LabelSource,
    LoaderSettings,
    SplitSettings,
    counted_refusals,
    take,
)
from mammo.data.units import UnitDataset, check_unit, check_unit_keys
from mammo.readings.adjudication import FILED_LABEL, apply_readings, readings_summary

# -- patient-grouped splits ---------------------------------------------------------------------------
log = logging.getLogger("mammo.data")


def grouped_val_mask(
    labels: np.ndarray,
    groups: np.ndarray,
    val_fraction: float,
    seed: int,
    memo_dir: str | Path | None = None,
    setting: str = "data.val_fraction",
) -> np.ndarray:
    """Boolean mask of validation rows: about ``val_fraction`` of the data, whole patients only:
    the first of ``round(1 / val_fraction)`` folds (:func:`fold_numbers`, remembered in
    ``memo_dir``). ``setting`` names the fraction in errors (``data.test_fraction`` for the test
    split, which is drawn the same way).

    >>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1]); g = np.repeat(np.arange(5), 2)
    >>> m = grouped_val_mask(y, g, 0.2, seed=0); int(m.sum()), len(set(g[m]) & set(g[~m]))
    (2, 0)
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{setting}={val_fraction}: expected a fraction in (0, 1)")
    n_splits = max(2, round(1.0 / val_fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(
            f"data: {n_groups} patients cannot make a patient-grouped split with "
            f"{setting.removeprefix('data.')}={val_fraction} (needs at least {n_splits})"
        )
    mask = fold_numbers(labels, groups, n_splits, seed, f"{setting}={val_fraction}", memo_dir) == 1
    check_no_leakage(groups, mask)
    return mask


def fold_numbers(
    labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, setting: str, memo_dir=None
) -> np.ndarray:
    """The validation fold (1..``n_splits``) of every row, from :func:`grouped_folds`.

    scikit-learn's greedy assignment is most of a repeated run's start-up at cohort scale (~40 ms
    per 1,000 images), and it depends only on its inputs: with ``memo_dir`` the result is kept in
    ``<memo_dir>/splits/<hash of labels, patients, folds, seed, scikit-learn version>.npy`` and
    read back by the next run over the same rows.
    """
    memo = _memo_path(memo_dir, labels, groups, n_splits, seed)
    if memo is not None and memo.is_file():
        try:
            numbers = np.load(memo, allow_pickle=False)
            if (
                numbers.shape == (len(labels),)
                and numbers.size
                and 1 <= numbers.min() <= numbers.max() <= n_splits
            ):
                return numbers
        except (OSError, ValueError):
            pass  # a damaged memo only costs recomputing it
    numbers = np.zeros(len(labels), dtype=np.int32)
    for k, (_, val_idx) in enumerate(grouped_folds(labels, groups, n_splits, seed, setting), start=1):
        numbers[val_idx] = k
    if memo is not None:
        try:
            with atomic_open(memo, "wb") as f:
                np.save(f, numbers)
        except OutputError as exc:  # a read-only cache folder: the next run recomputes it
            log.warning("The split is not remembered: %s", exc)
    return numbers


def _memo_path(memo_dir, labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> Path | None:
    if not memo_dir:
        return None
    digest = hashlib.sha256(f"{sklearn.__version__}|{n_splits}|{seed}|".encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update("\0".join(map(str, groups)).encode())
    return Path(memo_dir) / "splits" / f"{digest.hexdigest()[:24]}.npy"


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, setting: str):
    """scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded) folds as (train, val) indices.

    Where it cannot stratify (fewer images of every class than folds), the error names
    ``setting``, each density's patients and what to change, instead of scikit-learn's message.

    >>> y = np.array([0, 1, 1]); g = np.array([0, 1, 2])
    >>> next(grouped_folds(y, g, 5, 0, "data.val_fraction=0.2"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mammo.core.errors.DataError: data.val_fraction=0.2: ... (patients per density: 1: 1, 2: 2); ...
    """
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        yield from splitter.split(np.zeros(len(labels)), labels, groups)
    except ValueError as exc:
        if "n_splits" not in str(exc):
            raise
        per_class = pd.Series(groups).groupby(np.asarray(labels) + 1).nunique()
        rarest = int(per_class.idxmin())
        counts = ", ".join(f"{d}: {n}" for d, n in per_class.items())
        raise DataError(
            f"{setting}: a patient-grouped, class-stratified split into {n_splits} folds needs more patients"
            f" per density than the data has (patients per density: {counts}); the rarest, density"
            f" {rarest}, has {per_class[rarest]}. Raise data.val_fraction (fewer folds), add data, or give"
            " a preset split with data.split_csv"
        ) from None


def check_no_leakage(groups: np.ndarray, val_mask: np.ndarray) -> None:
    """Fail if any patient has images on both sides of the split."""
    shared = set(groups[val_mask]) & set(groups[~val_mask])
    if shared:
        raise DataError(f"split leaks {len(shared)} patient(s) across its sides: {sorted(shared)[:5]}")


def split_frame(
    table: pd.DataFrame, val_mask: np.ndarray, class_labels: list, test_mask: np.ndarray | None = None
) -> pd.DataFrame:
    """The split as saved in the run dir (``split.csv``): one row per image with its side,
    ``train``, ``val`` or ``test``."""
    out = table[["image_id", "AccessionNumber", "PatientID"]].copy()
    out["label"] = np.asarray(class_labels)[table["label"].to_numpy()]
    out["split"] = np.where(val_mask, "val", "train")
    if test_mask is not None:
        out.loc[test_mask, "split"] = "test"
    return out


def kfold_assignment(
    labels: np.ndarray, groups: np.ndarray, folds: int, seed: int, memo_dir: str | Path | None = None
) -> np.ndarray:
    """Fold number (1..``folds``) of every row: patient-grouped, class-stratified, every patient in
    exactly one validation fold. Depends only on the rows, ``folds`` and ``seed``.

    >>> y = np.array([0, 1] * 6); g = np.repeat(np.arange(6), 2)
    >>> f = kfold_assignment(y, g, 3, seed=0)
    >>> sorted(set(f.tolist())), all(len(set(f[g == p])) == 1 for p in g)
    ([1, 2, 3], True)
    """
    if folds < 2:
        raise DataError(f"cv.folds={folds}: expected at least 2")
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        raise DataError(f"data: {n_groups} patients cannot make {folds} patient-grouped folds")
    return fold_numbers(labels, groups, folds, seed, f"cv.folds={folds}", memo_dir).astype(int)


def subset_mask(labels: np.ndarray, groups: np.ndarray, subset: float, seed: int) -> np.ndarray:
    """Rows to keep for ``data.subset``: about ``subset`` of them (a fraction in (0, 1], or a number
    of rows when > 1), whole patients only, stratified by class.

    Patients are shuffled (seeded) within their most frequent class and taken until each class
    has its share of images: one pass, so a few hundred images out of 100,000 cost milliseconds.

    >>> y = np.array([0, 1] * 20); g = np.repeat(np.arange(20), 2)
    >>> m = subset_mask(y, g, 0.25, seed=0); int(m.sum()), len(set(g[m]) & set(g[~m]))
    (10, 0)
    >>> y = np.repeat([0, 1, 2, 3], 25); g = np.arange(100)
    >>> np.bincount(y[subset_mask(y, g, 20, seed=1)]).tolist()
    [5, 5, 5, 5]
    """
    n = len(labels)
    fraction = subset / n if subset > 1 else subset
    if not 0.0 < fraction:
        raise DataError(f"data.subset={subset}: expected a fraction in (0, 1] or a number of images")
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    frame = pd.DataFrame({"label": labels, "group": groups})
    counts = pd.crosstab(frame["group"], frame["label"])  # images per patient and class
    patients = pd.DataFrame({"size": counts.sum(axis=1), "label": counts.idxmax(axis=1)})
    patients = patients.iloc[np.random.default_rng(seed).permutation(len(patients))]
    quota = (patients.groupby("label")["size"].sum() * fraction).round()  # images per main class
    taken = patients.groupby("label")["size"].cumsum() - patients["size"]  # images before each patient
    chosen = patients.index[(taken < patients["label"].map(quota)).to_numpy()]
    if len(chosen) == 0:
        raise DataError(f"data.subset={subset}: too few patients to subsample")
    return frame["group"].isin(chosen).to_numpy()


def keep_subset(table: pd.DataFrame, val_ids: set, subset, seed: int) -> pd.DataFrame:
    """``data.subset``: the validation rows (``image_id`` in ``val_ids``) and a stratified share
    of the training patients (:func:`subset_mask`); the rest is neither preprocessed nor counted."""
    is_val = table["image_id"].isin(val_ids).to_numpy()
    train = table[~is_val]
    keep = is_val.copy()
    keep[~is_val] = subset_mask(train["label"].to_numpy(), train["PatientID"].to_numpy(), subset, seed)
    log.info(
        "data.subset=%s: training on %d of %d training images (%d patients)",
        subset,
        int(keep[~is_val].sum()),
        len(train),
        train["PatientID"][keep[~is_val]].nunique(),
    )
    return table[keep].reset_index(drop=True)


def train_val_tables(
    table: pd.DataFrame,
    val_mask: np.ndarray,
    class_labels: list,
    subset,
    seed: int,
    where: str = "",
    test_mask: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation rows of ``table`` (the ``test_mask`` rows in neither): no
    patient on both sides, the training part cut to ``subset`` (whole patients, stratified), and
    every class on both sides."""
    if test_mask is not None:
        table, val_mask = table[~test_mask], val_mask[~test_mask]
    check_no_leakage(table["PatientID"].to_numpy(), val_mask)
    train, val = table[~val_mask], table[val_mask]
    if subset is not None:
        train = train[subset_mask(train["label"].to_numpy(), train["PatientID"].to_numpy(), subset, seed)]
    for name, part in (("train", train), ("val", val)):
        missing = sorted(set(table["label"]) - set(part["label"]))
        if missing:
            patients = table.groupby("label")["PatientID"].nunique()
            counts = ", ".join(f"{class_labels[c]}: {patients[c]}" for c in missing)
            raise DataError(
                f"data: the {name} split{where} has no image of density "
                f"{[class_labels[c] for c in missing]} (patients with that density: {counts}); "
                "add data or change data.val_fraction / data.split_seed / data.split_csv / cv.folds"
            )
    return train, val


# -- the split ----------------------------------------------------------------------------------------
SPLIT_KEYS = ("image_id", "relpath", "AccessionNumber", "PatientID")
SIDES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def split_masks(
    table: pd.DataFrame, settings: SplitSettings, memo_dir: str | Path | None = None, with_val: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows of the locked test split (all ``False`` when none is configured) and, with
    ``with_val``, the validation rows among the others: the preset CSV's ``val`` rows (the CSV is
    read once for both), else a patient-grouped, class-stratified ``data.val_fraction`` of the
    remaining patients."""
    sides = preset_sides(table, settings.split_csv) if settings.split_csv else None
    test = sides == "test" if sides is not None else locked_test_rows(table, settings, memo_dir)
    if not with_val:
        return test, None
    if sides is not None:
        return test, sides == "val"
    rest = table[~test]
    labels, patients = rest.get(FILED_LABEL, rest["label"]).to_numpy(), rest["PatientID"].to_numpy()
    val = np.zeros(len(table), dtype=bool)
    val[~test] = grouped_val_mask(labels, patients, settings.val_fraction, settings.split_seed, memo_dir)
    return test, val


def locked_test_rows(table: pd.DataFrame, settings: SplitSettings, memo_dir: str | Path | None) -> np.ndarray:
    """The test split without a preset CSV: the dataset's official one, or ``data.test_fraction``."""
    if uses_official_test(table, settings):
        mask = (table["split"] == "test").to_numpy()
        log.info("Using the dataset's official test split (%d test images held out)", int(mask.sum()))
        return mask
    if settings.test_fraction is None:
        return np.zeros(len(table), dtype=bool)
    labels, patients = table.get(FILED_LABEL, table["label"]).to_numpy(), table["PatientID"].to_numpy()
    mask = grouped_val_mask(
        labels, patients, settings.test_fraction, settings.split_seed, memo_dir, "data.test_fraction"
    )
    log.info(
        "data.test_fraction=%s: %d images of %d patients held out as the test split",
        settings.test_fraction,
        int(mask.sum()),
        len(set(patients[mask])),
    )
    return mask


def uses_official_test(table: pd.DataFrame, settings: SplitSettings) -> bool:
    """Whether the dataset comes with its own test split (VinDr-Mammo) and it is used:
    ``data.official_split=true`` and no split CSV."""
    return bool(
        settings.official_split
        and not settings.split_csv
        and "split" in table
        and table["split"].isin(["train", "test"]).all()
        and (table["split"] == "test").any()
    )


def preset_sides(table: pd.DataFrame, split_csv: str | Path) -> np.ndarray:
    """Each row's side (``train``/``val``/``test``) from a split CSV: a ``split`` column
    (``validation`` and ``training`` are accepted too) and one key column, the first of
    ``image_id``, ``relpath``, ``AccessionNumber``, ``PatientID`` present. A run's own
    ``split.csv`` works as is.

    Every image must be covered; a key listed on two sides, or a patient whose images land on
    two sides, is an error.
    """
    split_csv = Path(split_csv)
    preset = read_csv_table(split_csv, key="data.split_csv", what="split CSV")
    key = next((c for c in SPLIT_KEYS if c in preset.columns), None)
    if key is None or "split" not in preset.columns:
        raise DataError(
            f"{split_csv}: needs a 'split' column and one of {', '.join(SPLIT_KEYS)}; "
            f"found: {', '.join(preset.columns)}"
        )
    sides = preset["split"].str.strip().str.lower().map(SIDES)
    unknown = preset.loc[sides.isna(), "split"]
    if len(unknown):
        row = int(unknown.index[0]) + 2
        raise DataError(
            f"{split_csv}: row {row}: unknown split {unknown.iloc[0]!r} (expected train, val or test)"
        )
    keys = preset[key].str.strip()
    per_key = pd.Series(sides.to_numpy(), index=keys).groupby(level=0).nunique()
    both = sorted(per_key.index[per_key > 1])
    if both:
        raise DataError(f"{split_csv}: {key} on two sides of the split: {both[:5]}")
    side_of = dict(zip(keys, sides))
    mapped = table[key].astype(str).map(side_of)
    if mapped.isna().any():
        missing = table.loc[mapped.isna(), key].astype(str).unique()
        raise DataError(
            f"{split_csv}: {len(missing)} {key} value(s) of the data not in the split: {list(missing[:5])}"
        )
    result = mapped.to_numpy().astype(str)
    patients = table["PatientID"].to_numpy()
    for side in ("val", "test"):
        check_no_leakage(patients, result == side)
    return result


# -- the data module ----------------------------------------------------------------------------------
class DensityDataModule(L.LightningDataModule):
    """Density data from a label CSV + DICOMs, a public dataset, or the generated demo set.

    Args:
        labels: where the labelled images are and how to read them (:class:`LabelSource`).
        split: how validation images are chosen (:class:`SplitSettings`).
        preprocessing: how each image is preprocessed (:class:`~mammo.data.images.Preprocessing`).
        loading: batches, workers, the cache and augmentation (:class:`LoaderSettings`).

    The config (``conf/data/*.yaml``) is one flat node; :meth:`from_config` groups it.
    """

    def __init__(
        self, labels: LabelSource, split: SplitSettings, preprocessing: Preprocessing, loading: LoaderSettings
    ) -> None:
        super().__init__()
        self.labels, self.split_settings, self.loading = labels, split, loading
        self.preprocessing = preprocessing
        self.samples: Samples | None = None
        self.source: ImageSource | None = None
        self.train_table: pd.DataFrame | None = None
        self.val_table: pd.DataFrame | None = None
        self.test_table: pd.DataFrame | None = None  # the locked test split (no rows: none)
        self.test_mask: np.ndarray | None = None
        self.manifest: dict | None = None
        self.cache_stats: dict = {}
        self.fold_ids: np.ndarray | None = None
        self.fold: int | None = None
        self.embeddings: tuple[np.ndarray, np.ndarray] | None = None
        # no horizontal flip where preprocessing oriented every chest wall to one side
        flip = preprocessing.orient == "none"
        self.augment = BatchAugmentation(flip) if loading.train_augment else None
        self.unit: str | None = None  # breast | exam: batches of whole units (model=multiview)
        self.batch_memory: BatchBuffers | None = None  # every loader's batches go into it

    @classmethod
    def from_config(cls, **settings) -> DensityDataModule:
        """Build from the flat ``data`` config (``_target_`` of ``conf/data/*.yaml``); a key no
        group has is refused by name."""
        settings = dict(settings)
        columns = take(LabelColumns, settings)
        labels = take(LabelSource, {**settings, "columns": columns})
        settings = {k: v for k, v in settings.items() if k not in labels.__dataclass_fields__}
        split, loading = take(SplitSettings, settings), take(LoaderSettings, settings)
        preprocessing = take(Preprocessing, settings)
        if settings:
            raise DataError(f"data.{sorted(settings)[0]}: not a data setting (see conf/data/dicom_csv.yaml)")
        return cls(labels, split, preprocessing, loading)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.samples is not None:
            return
        hp, memo = self.split_settings, self.loading.cache_dir
        self.samples = load_source(self.labels, memo, self.loading.num_workers)
        self.samples.check_every_class(self.labels.num_classes)
        table = self.samples.table
        test, val = split_masks(table, hp, memo, with_val=hp.cv_folds is None)  # test first: nothing
        test_ids = set(table["image_id"][test])  # after it sees the test rows
        val_ids = None
        if val is not None:
            val_ids = set(table["image_id"][val])
            if hp.subset is not None:  # before the images are prepared: only the kept ones are
                self.samples.table = keep_subset(table, val_ids | test_ids, hp.subset, hp.split_seed)
        self._prepare_images()
        table = self.samples.table
        self.test_mask = table["image_id"].isin(test_ids).to_numpy()
        self.test_table = table[self.test_mask]
        if hp.cv_folds is not None:
            rest = table[~self.test_mask]
            self.fold_ids = np.zeros(len(table), dtype=int)  # 0: a test image, in no fold
            labels, patients = rest.get(FILED_LABEL, rest["label"]).to_numpy(), rest["PatientID"].to_numpy()
            self.fold_ids[~self.test_mask] = kfold_assignment(
                labels, patients, int(hp.cv_folds), hp.split_seed, memo
            )
            if hp.cv_fold is not None:
                self.use_fold(int(hp.cv_fold))
            return
        self._use_split(table["image_id"].isin(val_ids).to_numpy())

    def use_fold(self, fold: int) -> None:
        """Validate on fold ``fold`` (1-based) of the k-fold assignment."""
        if self.fold_ids is None:
            raise DataError("data: use_fold needs cv_folds (cv=kfold)")
        if not 1 <= fold <= int(self.split_settings.cv_folds):
            raise DataError(f"cv.fold={fold}: expected 1..{self.split_settings.cv_folds}")
        self.fold = fold
        self._use_split(self.fold_ids == fold)

    def folds_frame(self) -> pd.DataFrame:
        """The fold assignment as saved beside the folds (``folds.csv``; fold 0: a test image)."""
        out = split_frame(self.samples.table, self.fold_ids > 0, self.samples.class_labels).drop(
            columns="split"
        )
        out["fold"] = self.fold_ids
        return out

    def _use_split(self, val_rows: np.ndarray) -> None:
        hp, samples = self.split_settings, self.samples
        where = f" of fold {self.fold}" if self.fold else ""
        subset = hp.subset if hp.cv_folds is not None else None  # else applied before preparing
        self.train_table, self.val_table = train_val_tables(
            samples.table, val_rows, samples.class_labels, subset, hp.split_seed, where, self.test_mask
        )
        self.split = split_frame(samples.table, val_rows, samples.class_labels, self.test_mask)

    def prepare_samples(self) -> None:
        """Load, check and hash the samples, fill the cache and build the manifest (no split)."""
        self.samples = load_source(self.labels, self.loading.cache_dir, self.loading.num_workers)
        self._prepare_images()

    def _prepare_images(self) -> None:
        """The image source (filling the memory or disk cache) and the manifest of the samples."""
        loading, samples = self.loading, self.samples
        disk = loading.cache_mode == "disk"
        cache = DiskCache(loading.cache_dir, self.preprocessing, loading.read_threads()) if disk else None
        self.source = ImageSource(samples.table, self.preprocessing, cache)
        if loading.cache_mode != "none":
            skip = self.labels.on_bad_file == "skip"
            self.source, self.cache_stats = fill_cache(
                self.source, samples, loading.cache_mode, loading.num_workers, skip
            )
        if samples.skipped:
            log.warning(
                "Skipped %d bad file(s)/row(s) (data.on_bad_file=skip; see data_manifest.json): %s",
                len(samples.skipped),
                counted_refusals(samples.skipped),
            )
        label_files = samples.source.get("label_files") or [samples.source["csv"]]
        names = {"csv": label_files[0], **{f"csv_{i}": f for i, f in enumerate(label_files[1:], start=2)}}
        split_csv = self.split_settings.split_csv
        self.manifest = build_manifest(
            samples,
            samples.class_labels,
            {**{k: Path(v) for k, v in names.items()}, "split_csv": split_csv and Path(split_csv)},
            (*SCANNER_COLUMNS, *self.labels.columns.subgroup_columns),
        )

    # -- loaders -------------------------------------------------------------------------------
    def attach_embeddings(self, embeddings_dir: str | Path | None) -> int:
        """Give every batch the precomputed embedding of each image (``mammo.embed``'s
        ``features.npy`` + ``joined.csv``, matched by ``image_id``); returns the width."""
        self.embeddings = embedding_rows(embeddings_dir, self.samples.table["image_id"])
        return int(self.embeddings[0].shape[1])

    def feed_units(self, unit: str | None) -> None:
        """Batches of whole breasts or exams (``model=multiview``'s ``model.unit``) instead of
        images; every image must name its unit (one line says which does not)."""
        self.unit = unit and check_unit(unit)
        if self.unit and self.samples is not None:
            check_unit_keys(self.samples.table, self.unit, self.samples.source.get("csv", "the data"))

    def dataset(self, table: pd.DataFrame, training: bool = False) -> DicomDataset | UnitDataset:
        """The rows of ``table`` as a batch Dataset (with their embeddings when attached); with
        :meth:`feed_units`, its breasts or exams (for ``training``, those whose images agree)."""
        memory, source = self._batch_memory(), self.source.select(table.index.to_numpy())
        if self.unit:
            units = UnitDataset(table, source, self.unit, training, memory)
            if training and units.disagreeing:
                log.info(
                    "Training on %d %ss (%d left out: their images disagree on the density)",
                    len(units),
                    self.unit,
                    units.disagreeing,
                )
            return units
        embeddings = None
        if self.embeddings is not None:
            features, rows = self.embeddings
            embeddings = (features, rows[table.index.to_numpy()])
        return DicomDataset(table, source, embeddings, memory)

    def _batch_memory(self) -> BatchBuffers:
        """The memory every batch this datamodule's loaders read goes into, recycled: pinned
        where the trainer runs on a CUDA device and batches are read in this process (the GPU then
        copies them straight from it); loader workers' batches are pinned by the loader."""
        pinned = self._on_cuda() and self.loading.batch_workers() == 0
        if self.batch_memory is None or self.batch_memory.pinned != pinned:
            self.batch_memory = BatchBuffers(pinned=pinned)
        return self.batch_memory

    def _on_cuda(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset(self.train_table, training=True)
        return self._loader(dataset, sampler=self._train_sampler(dataset))

    def _train_sampler(self, dataset: Dataset):
        """The training order: a new one every epoch, a function of ``(seed, epoch)`` only.

        Its epoch is set here too, to the one Lightning's ``set_epoch`` will give it before the
        next epoch: a resumed run's loader starts its iterator (with workers, prefetching indices)
        before that call, and would otherwise replay an earlier epoch's order. Under DDP the
        sampler is the shard of the same kind that Lightning would put in (``DistributedSampler``).
        """
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(
                dataset, trainer.world_size, trainer.global_rank, shuffle=True, seed=int(self.loading.seed)
            )
        else:
            sampler = EpochShuffle(dataset, self.loading.seed)
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0)
        return sampler

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_table))

    def _loader(self, dataset: Dataset, sampler=None) -> DataLoader:
        return batch_loader(dataset, self.loading, sampler, pin_memory=self._on_cuda())

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Lightning's copy to ``device``; from the pinned batch memory, it leaves a CUDA event
        behind it, which the next batch's read waits for before reusing any of that memory
        (:class:`~mammo.data.cache.BatchBuffers`)."""
        moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        memory = self.batch_memory
        if memory is not None and memory.pinned and device.type == "cuda":
            memory.fence = torch.cuda.Event()
            memory.fence.record(torch.cuda.current_stream(device))
        return moved

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """On the device: channels_last on a GPU; training batches augmented (``BatchAugmentation``)."""
        images, *rest = batch
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return (images, *rest)

    # -- reporting -----------------------------------------------------------------------------
    def class_distribution(self, table: pd.DataFrame) -> dict[str, int]:
        labels = self.samples.class_labels
        counts = table["label"].value_counts()
        return {str(labels[c]): int(counts.get(c, 0)) for c in range(len(labels))}

    def cache_report(self) -> dict | None:
        """summary.json's ``data_config.cache``: the fill's counts and ``rebuilt_on_read`` (entries
        rebuilt when a loader read them: damaged or changed since the fill)."""
        return (
            {**self.cache_stats, "rebuilt_on_read": self.source.rebuilt.value} if self.cache_stats else None
        )

    def describe_samples(self) -> dict:
        """What :meth:`describe` says without a split: the images, what was excluded or skipped,
        preprocessing and cache (for embedding every image, and for a run that fails at its split)."""
        return {
            **self.samples.source,
            "num_images": len(self.samples.table),
            "num_patients": int(self.samples.table["PatientID"].nunique()),
            "class_distribution": self.class_distribution(self.samples.table),
            "excluded": len(self.samples.excluded),
            "skipped": len(self.samples.skipped),
            "views": None if self.labels.views is None else list(self.labels.views),
            "preprocessing": self.preprocessing.settings(),
            "cache_mode": self.loading.cache_mode,
            "cache": self.cache_report(),
            "on_bad_file": self.labels.on_bad_file,
            **readings_summary(self.samples.readings),
            "manifest_file": "data_manifest.json",
            "manifest_sha256": manifest_sha256(self.manifest),
        }

    def describe(self) -> dict:
        """The ``data_config`` block of summary.json."""
        hp = self.split_settings
        official = uses_official_test(self.samples.table, hp)
        return {
            **self.describe_samples(),
            "num_train": len(self.train_table),
            "num_val": len(self.val_table),
            "num_test": len(self.test_table),
            "train_class_distribution": self.class_distribution(self.train_table),
            "val_class_distribution": self.class_distribution(self.val_table),
            "test_class_distribution": self.class_distribution(self.test_table),
            "val_fraction": None if hp.split_csv or hp.cv_folds else hp.val_fraction,
            "test_fraction": None if hp.split_csv or official else hp.test_fraction,
            "split_seed": None if hp.split_csv else hp.split_seed,
            "official_split": official,
            "cv_folds": hp.cv_folds,
            "subset": hp.subset,
            "cv_fold": self.fold,
            "split_csv": hp.split_csv,
            "split_file": "split.csv",
        }


def batch_loader(
    dataset: Dataset, loading: LoaderSettings, sampler=None, pin_memory: bool = False
) -> DataLoader:
    """The DataLoader a run reads ``dataset`` with (``scripts/bench_cache.py`` times this one):
    ``loading.batch_size`` batches of ``sampler``'s order (the dataset's without one), in the
    training process where every image is cached (:meth:`LoaderSettings.batch_workers`), each
    batch knowing the next (:class:`~mammo.data.order.LookaheadBatches`). A DDP shard
    (``DistributedSampler``) stays the loader's ``sampler``, where Lightning looks for it. With
    ``pin_memory`` (a CUDA trainer), batches from loader workers are copied to pinned memory;
    those read in this process already are in it (``DensityDataModule._batch_memory``)."""
    workers = loading.batch_workers()
    if isinstance(sampler, DistributedSampler):
        batching = {"sampler": sampler, "batch_size": loading.batch_size}
    else:
        sampler = sampler if sampler is not None else SequentialSampler(dataset)
        batching = {"batch_sampler": LookaheadBatches(sampler, loading.batch_size, drop_last=False)}
    return DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory and workers > 0,
        collate_fn=collate,
        # the loader's own generator: starting its iterator (workers' base seed) draws nothing
        # from the global torch random state, which a resumed run must find as it was saved
        generator=torch.Generator().manual_seed(int(loading.seed)),
    )


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
    hash_index = HashIndex(Path(cache_dir) / "file_hashes.json" if cache_dir else None)
    views, bad, workers = (
        None if source.views is None else list(source.views),
        source.on_bad_file,
        max(2, workers),
    )
    with collections_paused():
        if source.dataset:  # a public dataset's label files, as published
            options = source.dataset_options or {}
            samples = load_public(
                source.dataset, csv, dicom_root, options, bad, hash_index, workers, views, source.patient_id
            )
        else:
            samples = load_samples(
                csv,
                dicom_root,
                columns=source.columns,
                include_class_5=source.include_class_5,
                on_bad_file=bad,
                hash_index=hash_index,
                workers=workers,
                views=views,
                patient_id=source.patient_id,
            )
    if len(samples.class_labels) != source.num_classes:
        raise DataError(
            f"data.num_classes={source.num_classes} but the labels have {len(samples.class_labels)}"
            " classes (set data.num_classes=5 with data.include_class_5=true)"
        )
    if source.readings:
        samples.table, samples.readings = apply_readings(
            samples.table, samples.class_labels, list(source.readings), source.readings_rule
        )
    check_duplicates(samples, source.on_duplicate)
    exams = samples.table["AccessionNumber"].nunique()
    warn_of_split_exams(samples.exams_with_several_patients, exams, samples.patient_ids.get("setting", ""))
    return samples
