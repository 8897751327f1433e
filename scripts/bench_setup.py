"""Start-up cost at cohort scale: labels, header checks, hashes, manifest and split, first and
second run over the same files.

    python scripts/bench_setup.py [--sizes 1000 5000 20000]

Writes N small (64x48) DICOMs in the accession-folder layout with a label CSV, then times
``DensityDataModule.setup`` twice with one ``cache_dir`` (``cache_mode=none``: no image is
preprocessed, so this is the start-up alone). Prints seconds per 1,000 images for both runs, the
hashing alone (the floor of a first run), and second/first (goal <= 0.10); the first run's goal is
<= 0.5 s per 1,000 images plus the hashing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_cohort(root: Path, n: int) -> Path:
    """``n`` images, two per exam, four exams per patient; ``labels.csv`` beside ``archive/``."""
    from mammo.data.demo import write_dicom

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(64, 48)).astype(np.uint16)
    rows = ["AccessionNumber,Classification,PatientID"]
    for exam in range(n // 2):
        accession, patient = f"A{exam:06d}", f"P{exam // 4:06d}"
        rows.append(f"{accession},{'ABCD'[exam % 4]},{patient}")
        for view in ("CC", "MLO"):
            path = root / "archive" / accession / f"{view}.dcm"
            write_dicom(path, pixels, patient_id=patient, accession=accession, laterality="L", view=view)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def setup_seconds(csv: Path, cache_dir: Path) -> float:
    from mammo.artifacts.rundir import available_cpus
    from mammo.data.datamodule import DensityDataModule

    dm = DensityDataModule.from_config(
        csv=str(csv),
        dicom_root=str(csv.parent / "archive"),
        cache_mode="none",
        cache_dir=str(cache_dir),
        img_size=64,
        batch_size=16,
        num_workers=available_cpus(),  # a run's default (conf/data/dicom_csv.yaml)
        train_augment=True,
        seed=42,
    )
    start = time.perf_counter()
    dm.setup("fit")
    return time.perf_counter() - start


def hashing_seconds(root: Path) -> float:
    from mammo.data.scan import file_sha256

    start = time.perf_counter()
    for path in sorted((root / "archive").rglob("*.dcm")):
        file_sha256(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports and pydicom's lazy handlers
        setup_seconds(write_cohort(Path(tmp) / "data", 40), Path(tmp) / "cache")
    print("images   first run (s/1k)   second run (s/1k)   hashing alone (s/1k)   second/first")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            csv = write_cohort(Path(tmp) / "data", n)
            hashing = hashing_seconds(csv.parent)
            first = setup_seconds(csv, Path(tmp) / "cache")
            second = setup_seconds(csv, Path(tmp) / "cache")
        k = n / 1000
        print(
            f"{n:6d}   {first / k:16.3f}   {second / k:17.3f}   {hashing / k:20.3f}   {second / first:12.3f}"
            "   (goals: first <= 0.5 + hashing, second/first <= 0.10)"
        )


if __name__ == "__main__":
    main()
