"""LightningDataModule: sample table -> patient-grouped split -> DICOM datasets -> loaders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mammo.data.demo import ensure_demo_dataset
from mammo.data.dicom import read_image
from mammo.data.labels import Samples, accession_folder_samples
from mammo.data.splits import grouped_val_mask, split_frame
from mammo.errors import DataError


def resize(image: np.ndarray, img_size: int) -> torch.Tensor:
    """[H, W] float image -> [1, img_size, img_size] tensor (antialiased bilinear)."""
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True)[0]


def to_model_input(image: np.ndarray, img_size: int, mean, std) -> torch.Tensor:
    """[H, W] float image in [0, 1] -> normalised [3, img_size, img_size] tensor."""
    return normalize(resize(image, img_size).expand(3, -1, -1), mean, std)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=x.dtype)[:, None, None]
    std = torch.as_tensor(std, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


def train_augmentation():
    """Mild geometric and contrast jitter, applied to the [1, H, W] image before normalisation."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
        ]
    )


class DicomDataset(Dataset):
    """Images of a sample table; items are ``(image [3,H,W], label, row index)``."""

    def __init__(self, table: pd.DataFrame, img_size: int, mean, std, window: str, augment=None):
        self.paths = table["path"].tolist()
        self.labels = table["label"].to_numpy()
        self.rows = table.index.to_numpy()
        self.img_size, self.mean, self.std = img_size, mean, std
        self.window, self.augment = window, augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = resize(read_image(self.paths[i], self.window), self.img_size)
        if self.augment is not None:
            x = self.augment(x).clamp(0, 1)
        x = normalize(x.expand(3, -1, -1), self.mean, self.std)
        return x, int(self.labels[i]), int(self.rows[i])


class DensityDataModule(L.LightningDataModule):
    """Density data from a label CSV + DICOM folders (or the generated demo set).

    Args:
        csv: label CSV (``AccessionNumber``, ``Classification``, optional ``PatientID``).
        dicom_root: folder holding one sub-folder of DICOMs per accession number.
        demo: when set (``n_patients``, ``seed``, ``height``, ``width``, ``dir``), generate the
            demo dataset there on first use and read it instead of ``csv``/``dicom_root``.
        val_fraction: share of patients held out for validation.
        split_seed: seed of the patient-grouped stratified split.
    """

    def __init__(
        self,
        csv: str | None = None,
        dicom_root: str | None = None,
        demo: dict | None = None,
        id_column: str = "AccessionNumber",
        label_column: str = "Classification",
        patient_column: str = "PatientID",
        include_class_5: bool = False,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        img_size: int = 512,
        batch_size: int = 16,
        num_workers: int = 2,
        window: str = "auto",
        train_augment: bool = True,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.samples: Samples | None = None
        self.train_table: pd.DataFrame | None = None
        self.val_table: pd.DataFrame | None = None

    def load_samples(self) -> Samples:
        hp = self.hparams
        if hp.demo:
            root = ensure_demo_dataset(
                hp.demo["dir"],
                hp.demo["n_patients"],
                hp.demo["seed"],
                hp.demo["height"],
                hp.demo["width"],
            )
            csv, dicom_root = root / "classificacao.csv", root / "archive"
        else:
            if not hp.csv or not hp.dicom_root:
                raise DataError("data=dicom_csv needs data.csv=<labels.csv> and data.dicom_root=<folder>")
            csv, dicom_root = Path(hp.csv), Path(hp.dicom_root)
        samples = accession_folder_samples(
            csv, dicom_root, hp.id_column, hp.label_column, hp.patient_column, hp.include_class_5
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
        self.samples = self.load_samples()
        table = self.samples.table
        val_mask = grouped_val_mask(
            table["label"].to_numpy(),
            table["PatientID"].to_numpy(),
            self.hparams.val_fraction,
            self.hparams.split_seed,
        )
        self.train_table = table[~val_mask]
        self.val_table = table[val_mask]
        present = set(table["label"])
        for name, tab in (("train", self.train_table), ("val", self.val_table)):
            absent = sorted(self.samples.class_labels[c] for c in present - set(tab["label"]))
            if absent:
                raise DataError(
                    f"data: the {name} split has no image of density {absent}; "
                    "add data or change data.val_fraction / data.split_seed"
                )
        self.split = split_frame(table, val_mask, self.samples.class_labels)

    def _dataset(self, table: pd.DataFrame, augment) -> DicomDataset:
        hp = self.hparams
        return DicomDataset(table, hp.img_size, hp.mean, hp.std, hp.window, augment)

    def train_dataloader(self) -> DataLoader:
        augment = train_augmentation() if self.hparams.train_augment else None
        return self._loader(self._dataset(self.train_table, augment), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset(self.val_table, None), shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def class_distribution(self, table: pd.DataFrame) -> dict[str, int]:
        labels = self.samples.class_labels
        counts = table["label"].value_counts()
        return {str(labels[c]): int(counts.get(c, 0)) for c in range(len(labels))}

    def describe(self) -> dict:
        """The ``data_config`` block of summary.json."""
        return {
            **self.samples.source,
            "num_train": len(self.train_table),
            "num_val": len(self.val_table),
            "num_patients": int(self.samples.table["PatientID"].nunique()),
            "class_distribution": self.class_distribution(self.samples.table),
            "train_class_distribution": self.class_distribution(self.train_table),
            "val_class_distribution": self.class_distribution(self.val_table),
            "excluded": len(self.samples.excluded),
            "val_fraction": self.hparams.val_fraction,
            "split_seed": self.hparams.split_seed,
            "window": self.hparams.window,
            "split_file": "split.csv",
        }
