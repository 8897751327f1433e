"""LightningDataModule: labels -> checked, hashed samples -> split -> preprocessed (cached) images -> loaders.

Images leave the loaders as ``[1, H, W]`` float16 tensors in [0, 1], as stored (training batches are
augmented on the device, float32 after it); the model normalises them, so a cached epoch moves half
the bytes of a float32 RGB tensor and never recomputes normalisation per image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mammo.core.errors import DataError
from mammo.data.cache import DiskCache
from mammo.data.dataset import BatchAugmentation, DicomDataset, EpochShuffle, ImageSource, collate, fill_cache
from mammo.data.embedding_rows import embedding_rows
from mammo.data.holdout import split_masks, uses_official_test
from mammo.data.labels import Samples, load_source
from mammo.data.manifest import build_manifest, manifest_sha256
from mammo.data.preprocess import Preprocessing
from mammo.data.scan import SCANNER_COLUMNS
from mammo.data.settings import LabelColumns, LabelSource, LoaderSettings, SplitSettings, take
from mammo.data.splits import keep_subset, kfold_assignment, split_frame, train_val_tables

log = logging.getLogger("mammo.data")


class DensityDataModule(L.LightningDataModule):
    """Density data from a label CSV + DICOMs, a public dataset, or the generated demo set.

    Args:
        labels: where the labelled images are and how to read them (:class:`LabelSource`).
        split: how validation images are chosen (:class:`SplitSettings`).
        preprocessing: how each image is preprocessed (:class:`~mammo.data.preprocess.Preprocessing`).
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
        self.augment = BatchAugmentation() if loading.train_augment else None

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
            self.fold_ids[~self.test_mask] = kfold_assignment(
                rest["label"].to_numpy(), rest["PatientID"].to_numpy(), int(hp.cv_folds), hp.split_seed, memo
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
        cache = DiskCache(loading.cache_dir, self.preprocessing) if loading.cache_mode == "disk" else None
        self.source = ImageSource(samples.table, self.preprocessing, cache)
        if loading.cache_mode != "none":
            skip = self.labels.on_bad_file == "skip"
            self.source, self.cache_stats = fill_cache(
                self.source, samples, loading.cache_mode, loading.num_workers, skip
            )
        if samples.skipped:
            log.warning(
                "Skipped %d bad file(s)/row(s) (data.on_bad_file=skip; see data_manifest.json); first: %s",
                len(samples.skipped),
                samples.skipped[0]["reason"],
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

    def dataset(self, table: pd.DataFrame) -> DicomDataset:
        """The rows of ``table`` as a batch Dataset (with their embeddings when attached)."""
        embeddings = None
        if self.embeddings is not None:
            features, rows = self.embeddings
            embeddings = (features, rows[table.index.to_numpy()])
        return DicomDataset(table, self.source.select(table.index.to_numpy()), embeddings)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset(self.train_table)
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
        workers = self.loading.num_workers
        return DataLoader(
            dataset,
            batch_size=self.loading.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate,
            # the loader's own generator: starting its iterator (workers' base seed) draws nothing
            # from the global torch random state, which a resumed run must find as it was saved
            generator=torch.Generator().manual_seed(int(self.loading.seed)),
        )

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
