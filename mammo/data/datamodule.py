"""LightningDataModule: label CSV -> checked, hashed samples -> preprocessed (cached) images ->
patient-grouped split -> loaders.

Images leave the loaders as ``[1, H, W]`` tensors in [0, 1] (float16 as stored; training batches
are augmented in the training process, float32 after it); the model normalises them
(``DensityClassifier.forward``), so a cached epoch moves half the bytes of a float32 RGB tensor
and never recomputes normalisation per image.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mammo.data.cache import DiskCache
from mammo.data.dataset import (
    BatchAugmentation,
    CacheFiller,
    DicomDataset,
    EpochShuffle,
    ImageSource,
    as_list,
    collate,
)
from mammo.data.demo import ensure_demo_dataset
from mammo.data.labels import DEFAULT_VIEWS, Samples, load_samples
from mammo.data.manifest import HashIndex, build_manifest, manifest_sha256
from mammo.data.preprocess import Preprocessing
from mammo.data.splits import (
    check_no_leakage,
    grouped_val_mask,
    kfold_assignment,
    preset_val_mask,
    split_frame,
    subset_mask,
)
from mammo.errors import DataError

log = logging.getLogger("mammo.data")
CACHE_MODES = ("none", "memory", "disk")


class DensityDataModule(L.LightningDataModule):
    """Density data from a label CSV + DICOMs (or the generated demo set).

    Args:
        csv: label CSV (accession-folder or image-path layout, see ``mammo.data.labels``).
        dicom_root: folder of the DICOMs (accession folders, or the base of ``image_path``).
        demo: when set (``n_patients``, ``seed``, ``height``, ``width``, ``dir``), generate the
            demo dataset there on first use and read it instead of ``csv``/``dicom_root``.
        dataset: a public dataset (``rsna``, ``vindr``, ``cbis_ddsm``, ``embed``, ``inbreast``):
            ``csv`` is then its published label file(s) (see ``mammo.data.public``).
        dataset_options: options of that dataset's reader (EMBED: ``path_prefix``).
        root: the dataset's folder (the ``data=<dataset>`` configs derive ``csv``/``dicom_root``).
        official_split: use the dataset's own train/test split where it has one (VinDr-Mammo).
        val_fraction: share of patients held out for validation.
        split_seed: seed of the patient-grouped stratified split.
        split_csv: a preset split instead (see ``mammo.data.splits.preset_val_mask``).
        cache_mode: ``none`` (decode every epoch), ``memory`` (preprocess once into RAM) or
            ``disk`` (preprocess once into ``cache_dir``, reused by later runs).
        on_bad_file: ``error`` stops at the first bad row or file; ``skip`` leaves it out, logs
            it and lists it in data_manifest.json.
        window, percentiles, orient, crop, resize: see :class:`~mammo.data.preprocess.Preprocessing`.
        cv_folds, cv_fold: k-fold cross-validation: validate on fold ``cv_fold`` (1-based) of
            ``cv_folds`` patient-grouped folds seeded by ``split_seed``; with ``cv_fold=None`` the
            folds are assigned and :meth:`use_fold` picks one (all folds in one process).
        subset: train on part of the training split only (for fast searches): a fraction in
            (0, 1] or a number of images; whole patients, stratified by class. Validation is
            never subsampled.
        embeddings_dir: ``mammo.embed``'s output folder, read by :meth:`attach_embeddings` for a
            model with ``embeddings_fusion`` (the model records it too).
        views: the views trained on (CC and MLO); images of other views are excluded and
            counted, ``None`` keeps all (see ``mammo.data.labels.exclude_views``).
        seed: seed of the training order (a new one each epoch, see ``EpochShuffle``) and of
            the loaders' own random generators.
    """

    def __init__(
        self,
        csv: str | list[str] | None = None,
        dicom_root: str | None = None,
        demo: dict | None = None,
        dataset: str | None = None,
        dataset_options: dict | None = None,
        root: str | None = None,
        official_split: bool = True,
        id_column: str = "AccessionNumber",
        label_column: str = "Classification",
        patient_column: str = "PatientID",
        path_column: str = "image_path",
        laterality_column: str | None = None,
        view_column: str | None = None,
        include_class_5: bool = False,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        split_csv: str | None = None,
        img_size: int = 512,
        batch_size: int = 16,
        num_workers: int = 2,
        window: str = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        orient: str = "left",
        crop: bool = True,
        resize: str = "letterbox",
        cache_mode: str = "none",
        cache_dir: str | None = None,
        on_bad_file: str = "error",
        train_augment: bool = True,
        num_classes: int = 4,
        cv_folds: int | None = None,
        cv_fold: int | None = None,
        subset: float | None = None,
        embeddings_dir: str | None = None,
        seed: int = 42,
        views: list[str] | None = DEFAULT_VIEWS,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if cache_mode not in CACHE_MODES:
            raise DataError(f"data.cache_mode={cache_mode!r}: expected one of {', '.join(CACHE_MODES)}")
        if cache_mode == "disk" and not cache_dir:
            raise DataError("data.cache_mode=disk needs data.cache_dir")
        self.preprocessing = Preprocessing(img_size, window, tuple(percentiles), orient, crop, resize)
        self.samples: Samples | None = None
        self.source: ImageSource | None = None
        self.train_table: pd.DataFrame | None = None
        self.val_table: pd.DataFrame | None = None
        self.manifest: dict | None = None
        self.cache_stats: dict = {}
        self.fold_ids: np.ndarray | None = None
        self.fold: int | None = None
        self.embeddings: tuple[np.ndarray, np.ndarray] | None = None
        self.augment = BatchAugmentation() if train_augment else None
        if cv_folds is not None and split_csv:
            raise DataError("data.split_csv and cv=kfold are exclusive: the folds are the split")

    # -- setup ---------------------------------------------------------------------------------
    def label_files(self) -> tuple[Path, Path | None]:
        hp = self.hparams
        if hp.demo:
            d = hp.demo
            root = ensure_demo_dataset(d["dir"], d["n_patients"], d["seed"], d["height"], d["width"])
            return root / "classificacao.csv", root / "archive"
        if not hp.csv:
            raise DataError("data=dicom_csv needs data.csv=<labels.csv> (and data.dicom_root=<folder>)")
        csv = [Path(c) for c in hp.csv] if isinstance(hp.csv, list | tuple) else Path(hp.csv)
        return csv, Path(hp.dicom_root) if hp.dicom_root else None

    def load_samples(self) -> Samples:
        hp = self.hparams
        csv, dicom_root = self.label_files()
        log.info("Loading data from %s", csv)
        index = HashIndex(Path(hp.cache_dir) / "file_hashes.json" if hp.cache_dir else None)
        samples = load_samples(
            csv,
            dicom_root,
            id_column=hp.id_column,
            label_column=hp.label_column,
            patient_column=hp.patient_column,
            path_column=hp.path_column,
            laterality_column=hp.laterality_column,
            view_column=hp.view_column,
            include_class_5=hp.include_class_5,
            on_bad_file=hp.on_bad_file,
            hash_index=index,
            workers=max(2, hp.num_workers),
            dataset=hp.dataset,
            dataset_options=hp.dataset_options,
            views=None if hp.views is None else list(hp.views),
        )
        if len(samples.class_labels) != hp.num_classes:
            raise DataError(
                f"data.num_classes={hp.num_classes} but the labels have {len(samples.class_labels)}"
                " classes (set data.num_classes=5 with data.include_class_5=true)"
            )
        return samples

    def setup(self, stage: str | None = None) -> None:
        if self.samples is not None:
            return
        self.prepare_samples()
        hp, samples, table = self.hparams, self.samples, self.samples.table
        empty = [
            samples.class_labels[c]
            for c in range(len(samples.class_labels))
            if not (table["label"] == c).any()
        ]
        if empty:
            raise DataError(
                f"data: density class(es) {empty} have no samples in {samples.source['csv']} "
                f"({len(table)} usable images); a {hp.num_classes}-class model needs images of every class"
            )
        if hp.cv_folds is not None:
            self.fold_ids = kfold_assignment(
                table["label"].to_numpy(), table["PatientID"].to_numpy(), int(hp.cv_folds), hp.split_seed
            )
            if hp.cv_fold is not None:
                self.use_fold(int(hp.cv_fold))
            return
        if hp.split_csv:
            val_mask = preset_val_mask(table, hp.split_csv)
        elif self.official_split:
            val_mask = (table["split"] == "val").to_numpy()
            log.info("Using the dataset's official split (%d val images)", int(val_mask.sum()))
        else:
            val_mask = grouped_val_mask(
                table["label"].to_numpy(), table["PatientID"].to_numpy(), hp.val_fraction, hp.split_seed
            )
        self._use_split(val_mask)

    @property
    def official_split(self) -> bool:
        """Whether the dataset comes with its own train/val split (VinDr-Mammo) and it is used:
        ``data.official_split=true`` and neither a split CSV nor cross-validation."""
        table = self.samples.table
        return bool(
            self.hparams.official_split
            and not self.hparams.split_csv
            and self.hparams.cv_folds is None
            and "split" in table
            and table["split"].isin(["train", "val"]).all()
        )

    def use_fold(self, fold: int) -> None:
        """Validate on fold ``fold`` (1-based) of the k-fold assignment."""
        if self.fold_ids is None:
            raise DataError("data: use_fold needs cv_folds (cv=kfold)")
        if not 1 <= fold <= int(self.hparams.cv_folds):
            raise DataError(f"cv.fold={fold}: expected 1..{self.hparams.cv_folds}")
        self.fold = fold
        self._use_split(self.fold_ids == fold)

    def folds_frame(self) -> pd.DataFrame:
        """The fold assignment as saved beside the folds (``folds.csv``)."""
        out = split_frame(self.samples.table, self.fold_ids > 0, self.samples.class_labels).drop(
            columns="split"
        )
        out["fold"] = self.fold_ids
        return out

    def _use_split(self, val_mask: np.ndarray) -> None:
        samples, table = self.samples, self.samples.table
        check_no_leakage(table["PatientID"].to_numpy(), val_mask)
        self.train_table, self.val_table = table[~val_mask], table[val_mask]
        if self.hparams.subset is not None:
            train = self.train_table
            keep = subset_mask(
                train["label"].to_numpy(),
                train["PatientID"].to_numpy(),
                self.hparams.subset,
                self.hparams.split_seed,
            )
            self.train_table = train[keep]
        where = f" of fold {self.fold}" if self.fold else ""
        for name, tab in (("train", self.train_table), ("val", self.val_table)):
            missing = sorted(set(table["label"]) - set(tab["label"]))
            if missing:
                patients = table.groupby("label")["PatientID"].nunique()
                counts = ", ".join(f"{samples.class_labels[c]}: {patients[c]}" for c in missing)
                raise DataError(
                    f"data: the {name} split{where} has no image of density "
                    f"{[samples.class_labels[c] for c in missing]} (patients with that density: {counts}); "
                    "add data or change data.val_fraction / data.split_seed / data.split_csv / cv.folds"
                )
        self.split = split_frame(table, val_mask, samples.class_labels)

    def prepare_samples(self) -> None:
        """Load, check and hash the samples, fill the cache and build the manifest (no split)."""
        hp = self.hparams
        self.samples = samples = self.load_samples()
        cache = DiskCache(hp.cache_dir, self.preprocessing) if hp.cache_mode == "disk" else None
        self.source = ImageSource(samples.table, self.preprocessing, cache)
        if hp.cache_mode != "none":
            self._prepare(cache)
        if samples.skipped:
            log.warning(
                "Skipped %d bad file(s)/row(s) (data.on_bad_file=skip; see data_manifest.json); first: %s",
                len(samples.skipped),
                samples.skipped[0]["reason"],
            )
        label_files = samples.source.get("label_files") or [samples.source["csv"]]
        names = {"csv": label_files[0], **{f"csv_{i}": f for i, f in enumerate(label_files[1:], start=2)}}
        self.manifest = build_manifest(
            samples,
            samples.class_labels,
            {**{k: Path(v) for k, v in names.items()}, "split_csv": hp.split_csv and Path(hp.split_csv)},
        )

    def _prepare(self, cache: DiskCache | None) -> None:
        """Preprocess every image once (in ``num_workers`` processes) into the memory or disk cache."""
        hp, samples = self.hparams, self.samples
        start = time.perf_counter()
        keep = hp.cache_mode == "memory"
        loader = DataLoader(
            CacheFiller(self.source, keep, skip=hp.on_bad_file == "skip"),
            batch_size=4,
            num_workers=hp.num_workers,
            collate_fn=as_list,
        )
        memory = (
            np.zeros((len(self.source), *(self.preprocessing.img_size,) * 2), np.float16) if keep else None
        )
        counts = {"reused": 0, "built": 0, "regenerated": 0, "bad": 0}
        damaged, bad = [], {}
        for batch in loader:
            for i, status, detail, image in batch:
                counts[status] += 1
                if status == "bad":
                    if hp.on_bad_file != "skip":
                        raise DataError(detail)
                    bad[i] = detail
                    continue
                if status == "regenerated":
                    damaged.append(detail)
                if keep:
                    memory[i] = image
        seconds = time.perf_counter() - start
        if damaged:
            log.warning(
                "Disk cache truncation detected for %d samples - regenerating (%s)",
                len(damaged),
                "; ".join(damaged[:3]),
            )
            log.info("Cache rebuild complete (took %.1fs)", seconds)
        log.info(
            "Preprocessed images (cache_mode=%s%s): %d reused, %d built, %d regenerated, %d bad (%.1fs)",
            hp.cache_mode,
            f", {cache.folder}" if cache else "",
            counts["reused"],
            counts["built"],
            counts["regenerated"],
            counts["bad"],
            seconds,
        )
        if bad:
            positions = np.array([p for p in range(len(self.source)) if p not in bad])
            samples.drop({samples.table.index[i]: reason for i, reason in bad.items()})
            self.source = self.source.select(positions)
        self.source.memory = memory
        self.cache_stats = {
            **counts,
            "seconds": round(seconds, 3),
            "folder": str(cache.folder) if cache else None,
        }

    # -- loaders -------------------------------------------------------------------------------
    def attach_embeddings(self, embeddings_dir: str | Path | None) -> int:
        """Give every batch the precomputed embedding of each image (``mammo.embed``'s
        ``features.npy`` + ``joined.csv``, matched by ``image_id``); returns the width."""
        if not embeddings_dir:
            raise DataError(
                "model.embeddings_fusion=true needs data.embeddings_dir=<mammo.embed output folder>"
            )
        folder = Path(embeddings_dir)
        features_file, joined_file = folder / "features.npy", folder / "joined.csv"
        for path in (features_file, joined_file):
            if not path.is_file():
                raise DataError(f"data.embeddings_dir: {path} not found (run python -m mammo.embed first)")
        features = np.load(features_file, mmap_mode="r")
        joined = pd.read_csv(joined_file, usecols=["row", "image_id"], dtype={"image_id": str})
        row_of = dict(zip(joined["image_id"], joined["row"]))
        table = self.samples.table
        missing = [i for i in table["image_id"] if i not in row_of]
        if missing:
            raise DataError(
                f"{joined_file}: no embedding for {len(missing)} image(s), e.g. {missing[0]!r}; "
                "re-run python -m mammo.embed on the same data"
            )
        self.embeddings = (features, np.array([row_of[i] for i in table["image_id"]]))
        return int(features.shape[1])

    def _dataset(self, table: pd.DataFrame) -> DicomDataset:
        embeddings = None
        if self.embeddings is not None:
            features, rows = self.embeddings
            embeddings = (features, rows[table.index.to_numpy()])
        return DicomDataset(table, self.source.select(table.index.to_numpy()), embeddings)

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset(self.train_table)
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
                dataset, trainer.world_size, trainer.global_rank, shuffle=True, seed=int(self.hparams.seed)
            )
        else:
            sampler = EpochShuffle(dataset, self.hparams.seed)
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0)
        return sampler

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.val_table))

    def _loader(self, dataset: Dataset, sampler=None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate,
            # the loader's own generator: starting its iterator (workers' base seed) draws nothing
            # from the global torch random state, which a resumed run must find as it was saved
            generator=torch.Generator().manual_seed(int(self.hparams.seed)),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches here, in the training process (see ``BatchAugmentation``)."""
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images, *rest = batch
            batch = (self.augment(images), *rest)
        return batch

    # -- reporting -----------------------------------------------------------------------------
    def class_distribution(self, table: pd.DataFrame) -> dict[str, int]:
        labels = self.samples.class_labels
        counts = table["label"].value_counts()
        return {str(labels[c]): int(counts.get(c, 0)) for c in range(len(labels))}

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
            "views": None if self.hparams.views is None else list(self.hparams.views),
            "preprocessing": self.preprocessing.settings(),
            "cache_mode": self.hparams.cache_mode,
            "cache": self.cache_stats or None,
            "on_bad_file": self.hparams.on_bad_file,
            "manifest_file": "data_manifest.json",
            "manifest_sha256": manifest_sha256(self.manifest),
        }

    def describe(self) -> dict:
        """The ``data_config`` block of summary.json."""
        hp = self.hparams
        return {
            **self.describe_samples(),
            "num_train": len(self.train_table),
            "num_val": len(self.val_table),
            "train_class_distribution": self.class_distribution(self.train_table),
            "val_class_distribution": self.class_distribution(self.val_table),
            "val_fraction": None if hp.split_csv or hp.cv_folds or self.official_split else hp.val_fraction,
            "split_seed": None if hp.split_csv or self.official_split else hp.split_seed,
            "official_split": self.official_split,
            "cv_folds": hp.cv_folds,
            "subset": hp.subset,
            "cv_fold": self.fold,
            "split_csv": hp.split_csv,
            "split_file": "split.csv",
        }
