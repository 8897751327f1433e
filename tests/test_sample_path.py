"""One sample's path from its label-file row to its line in val_predictions.csv, measured on a
real run (docs/design/architecture.md): a handful of files, each a stage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mammo.data.cache import DiskCache, entry_name
from mammo.data.images import Preprocessing
from tests.conftest import SMALL_DEMO, TINY, run_cli
from tests.sample_trace import SampleTrace

MOST_FILES = 8  # issue 31's goal (23 before it)


def tiny_run(out: Path, demo_root: Path) -> Path:
    from mammo.train import main

    args = [
        *TINY,
        *SMALL_DEMO,
        "epochs=1",
        "data.cache_mode=disk",  # every stage: decoded, preprocessed, cached, read back in batches
        f"data.cache_dir={out / 'cache'}",
        f"paths.output_dir={out}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 0
    return sorted((out / "mammo_tiny_density").glob("results_*"))[-1]


def the_sample(run_dir: Path, demo_root: Path, cache: Path, store: Path) -> SampleTrace:
    """The first image of ``val_predictions.csv``: its keys, file and cached pixels."""
    row = pd.read_csv(run_dir / "val_predictions.csv", dtype=str).iloc[0]
    files = json.loads((run_dir / "data_manifest.json").read_text())["files"]
    relative = next(f["path"] for f in files if f["image_id"] == row["image_id"])
    file = next(demo_root.glob("*/archive")) / relative
    sha = next(f["sha256"] for f in files if f["image_id"] == row["image_id"])
    (folder,) = cache.glob("*/*/settings.json")
    disk = DiskCache(cache, Preprocessing(64))
    assert disk.folder == folder.parent  # the run's preprocessing at img_size=64
    pixels = disk.read(entry_name(row["AccessionNumber"], row["image_id"], sha), verify=True)
    side = pixels.shape[0]
    keys = {row["AccessionNumber"], row["image_id"]}
    return SampleTrace(keys, file, pixels.reshape(side, side), store=store)


def test_one_sample_passes_through_at_most_eight_files(tmp_path, demo_root):
    first = tiny_run(tmp_path / "first", demo_root)
    trace = the_sample(first, demo_root, tmp_path / "first" / "cache", store=tmp_path / "traced" / "cache")

    traced = trace.run(lambda: tiny_run(tmp_path / "traced", demo_root))  # a new cache: every stage runs

    assert pd.read_csv(traced / "val_predictions.csv", dtype=str).equals(
        pd.read_csv(first / "val_predictions.csv", dtype=str)
    )
    path = "\n".join(f"{f}: {', '.join(sorted(trace.functions[f]))}" for f in trace.files)
    stages = {
        "read labels": "labels",
        "find files": "scan",
        "decode": "images",
        "batch": "cache",
        "predict": "classifier",
    }
    for stage, module in stages.items():  # the trace sees each stage (it measures something)
        assert any(Path(f).stem == module for f in trace.files), f"{stage} not traced:\n{path}"
    assert len(trace.files) <= MOST_FILES, f"{len(trace.files)} files:\n{path}"
    print(f"{len(trace.files)} files:\n{path}")
