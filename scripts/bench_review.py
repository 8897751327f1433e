"""Review of a large run: ``python -m mammo.review`` on 20,000 validation images, its time and size.

    python scripts/bench_review.py [--images 20000] [--per-cell 24]

A tiny model is trained on the small demo set (as the tests do); its validation predictions and
data manifest are then grown to ``--images`` rows (new image ids over the same DICOM files, 4
images per patient, predictions with a known share of errors in every confusion cell, a warm disk
cache entry each: a hard link to its file's), and the review is built from them. Printed: the
review's seconds (goal: well under a minute on 2 cores), the seconds of its floor (the cards
alone: preprocessing and Grad-CAM of the shown images, which no review can skip) and the ratio,
the number of cards and the review folder's size (goal: tens of MB, not GB: only shown images
get a card).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mammo.data.cache import entry_name  # noqa: E402
from mammo.review_pages.build import build_review  # noqa: E402
from mammo.review_pages.cards import ranked_cells, write_cards  # noqa: E402
from mammo.review_pages.sources import read_source  # noqa: E402
from tests.conftest import SMALL_DEMO, TINY, run_cli  # noqa: E402


def tiny_run(tmp: Path) -> Path:
    from mammo.train import main

    args = [
        *TINY,
        *SMALL_DEMO,
        "epochs=1",
        "data.cache_mode=disk",
        f"paths.output_dir={tmp}",
        f"paths.demo_dir={tmp / 'demo'}",
    ]
    assert run_cli(main, args) == 0
    return next((tmp / "mammo_tiny_density").glob("results_*"))


def grow(run: Path, images: int, seed: int = 0) -> None:
    """The run's val predictions and manifest grown to ``images`` rows over its own files."""
    rng = np.random.default_rng(seed)
    manifest = json.loads((run / "data_manifest.json").read_text())
    files = manifest["files"]
    labels = rng.integers(1, 5, images)
    probs = rng.dirichlet(np.ones(4), images)
    probs[np.arange(images), labels - 1] += rng.uniform(0, 2.0, images)
    probs /= probs.sum(1, keepdims=True)
    ids = [f"BIG{i // 4:05d}/{i % 4}" for i in range(images)]
    frame = pd.DataFrame({"AccessionNumber": [i.split("/")[0] for i in ids], "true_label": labels})
    frame["predicted_label"] = probs.argmax(1) + 1
    for j in range(4):
        frame[f"prob_class{j + 1}"] = probs[:, j]
    frame["image_id"] = ids
    frame["laterality"] = ["L", "L", "R", "R"] * (images // 4) + ["L"] * (images % 4)
    frame["view"] = (["CC", "MLO"] * images)[:images]
    accessions = frame["AccessionNumber"]
    frame.to_csv(run / "val_predictions.csv", index=False)
    manifest["files"] = [
        {
            **files[i % len(files)],
            "image_id": ids[i],
            "AccessionNumber": accessions[i],
            "PatientID": f"P{i // 4:05d}",
            "label": int(labels[i]),
        }
        for i in range(images)
    ]
    (run / "data_manifest.json").write_text(json.dumps(manifest))
    cache = Path(json.loads((run / "summary.json").read_text())["data_config"]["cache"]["folder"])
    for i, f in enumerate(manifest["files"]):  # a warm disk cache: each grown image's entry is its file's
        original = files[i % len(files)]
        entry = cache / entry_name(original["AccessionNumber"], original["image_id"], original["sha256"])
        os.link(entry, cache / entry_name(f["AccessionNumber"], f["image_id"], f["sha256"]))
    for stale in (run / "metrics").glob("val_*"):
        stale.unlink()  # the metrics of the small run; the review computes the subgroups anew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-cell", type=int, default=24)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        run = tiny_run(Path(tmp))
        grow(run, args.images)
        start = time.perf_counter()
        index = build_review(run, per_cell=args.per_cell)
        total = time.perf_counter() - start
        source = read_source(run)
        cells = ranked_cells(source.predictions)
        rows = pd.concat(
            [f.head(args.per_cell if t != p else max(1, args.per_cell // 4)) for (t, p), f in cells.items()]
        )
        start = time.perf_counter()
        write_cards(source, rows, Path(tmp) / "floor")
        floor = time.perf_counter() - start
        size = sum(f.stat().st_size for f in index.parent.rglob("*") if f.is_file())
        cards = len(list((index.parent / "cards").glob("*.png")))
    print(f"review of {args.images} validation images, {cards} cards (per cell {args.per_cell}):")
    print(f"  python -m mammo.review: {total:6.1f} s   (goal: well under a minute)")
    print(f"  the cards alone:        {floor:6.1f} s   review / cards = {total / floor:.2f}")
    print(f"  review/ folder:         {size / 2**20:6.1f} MiB (goal: tens of MB)")


if __name__ == "__main__":
    main()
