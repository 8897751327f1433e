"""A small accession-folder dataset written by the tests (20 patients, 4 classes, 2 images each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo.data.demo import phantom, write_dicom


def make_dataset(root: Path, n_patients: int = 20, images: int = 2, shape=(48, 40)) -> tuple[Path, Path]:
    """``root/labels.csv`` + ``root/archive/<acc>/<i>.dcm``; class of patient p is p % 4 + 1."""
    rng = np.random.default_rng(0)
    rows = ["AccessionNumber,Classification,PatientID"]
    for p in range(n_patients):
        acc, density = f"ACC{p:03d}", p % 4 + 1
        rows.append(f"{acc},{'ABCD'[density - 1]},PAT{p:03d}")
        for i in range(images):
            laterality = "LR"[i % 2]
            image = phantom(density, laterality, "CC", shape, rng)
            write_dicom(
                root / "archive" / acc / f"{laterality}_CC.dcm",
                np.rint(image * 4000).astype(np.uint16),
                patient_id=f"PAT{p:03d}",
                accession=acc,
                laterality=laterality,
                view="CC",
            )
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", root / "archive"


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def make_datamodule(tmp_path):
    """``make_datamodule(csv, root, **options)``: a set-up DensityDataModule with tiny images."""
    from mammo.data.datamodule import DensityDataModule

    def make(csv, root, setup: bool = True, **kwargs):
        options = {
            "img_size": 32,
            "num_workers": 0,
            "batch_size": 64,
            "cache_mode": "none",
            "cache_dir": str(tmp_path / "cache"),
            "train_augment": True,
            "seed": 42,
        }
        dm = DensityDataModule.from_config(
            csv=str(csv), dicom_root=root and str(root), **{**options, **kwargs}
        )
        if setup:
            dm.setup("fit")
        return dm

    return make
