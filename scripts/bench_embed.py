"""Embedding benchmark: ``mammo.embed``'s extraction loop vs a bare inference loop, and memory.

    python scripts/bench_embed.py [--backbone resnet50] [--size 224] [--images 64]

In one run: images/s of (a) mammo's loop (Dataset + DataLoader from the memory cache, the
normalising Embedder, writes into the memory-mapped features.npy, progress bar) and (b) a bare
``torch.inference_mode`` loop over the same model and the same preprocessed tensors, already
stacked in memory; prints a/b (goal >= 0.95). Then the peak RSS of a full ``python -m mammo.embed``
at N and 4N images, each in a fresh process, and the growth (goal < 10 %).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=64, help="images timed per loop")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--patients", type=int, default=40, help="demo patients for the RSS runs (N); 4N is four times that"
    )
    args = parser.parse_args()

    import torch
    from bench_data import timed  # the scripts' one timer (this folder is on sys.path)

    from mammo.embeddings.extract import Embedder, extract
    from mammo.models.device import autocast, resolve_device, to_device

    torch.manual_seed(0)
    n, device = args.images, resolve_device("auto")  # the GPU when there is one
    dataset = in_memory_dataset(n, args.size)
    embedder = Embedder(
        args.backbone, None, False, None, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], device
    )
    stacked = torch.from_numpy(dataset.source.memory)[:, None]

    def mammo_loop():  # mammo.embed's own extraction loop
        with tempfile.TemporaryDirectory() as tmp:
            extract(embedder, dataset, Path(tmp) / "features.npy", args.batch_size, num_workers=0)

    mean = torch.tensor([0.485, 0.456, 0.406], device=device)[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device=device)[None, :, None, None]

    def bare_loop():  # the same model, precision and memory format, without mammo's loop
        with torch.inference_mode(), autocast(device):
            for start in range(0, n, args.batch_size):
                x = to_device(stacked[start : start + args.batch_size], device).float().expand(-1, 3, -1, -1)
                embedder.model((x - mean) / std).float().cpu()

    a, b = (n / timed(fn, args.repeats) for fn in (mammo_loop, bare_loop))
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{args.backbone} at {args.size}px, batch {args.batch_size}, {where}:")
    print(f"  (a) mammo embed loop: {a:7.1f} img/s")
    print(f"  (b) bare inference:   {b:7.1f} img/s")
    print(f"  a/b = {a / b:.3f}   (goal >= 0.95)")

    rss = [peak_rss(p, args) for p in (args.patients, 4 * args.patients)]
    growth = 100 * (rss[1][0] / rss[0][0] - 1)
    print(
        f"\npeak RSS of python -m mammo.embed: {rss[0][1]} images {rss[0][0]:.0f} MiB, "
        f"{rss[1][1]} images {rss[1][0]:.0f} MiB  -> growth {growth:+.1f} % (goal < 10 %)"
    )


def in_memory_dataset(n: int, size: int):
    """A DicomDataset of ``n`` random preprocessed images held in memory (no decoding timed)."""
    import numpy as np
    import pandas as pd
    import torch

    from mammo.data.cache import DicomDataset, ImageSource
    from mammo.data.images import Preprocessing

    table = pd.DataFrame(
        {
            "path": [""] * n,
            "laterality": [""] * n,
            "AccessionNumber": ["A"] * n,
            "image_id": [str(i) for i in range(n)],
            "sha256": ["0" * 64] * n,
            "label": np.arange(n) % 4,
        }
    )
    source = ImageSource(table, Preprocessing(size))
    source.memory = torch.rand(n, size, size).half().numpy()
    return DicomDataset(table, source)


def peak_rss(patients: int, args) -> tuple[float, int]:
    """(peak RSS in MiB, images) of a full embed run on a demo set of ``patients`` patients."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import resource, sys, runpy; sys.argv=['mammo.embed'] + sys.argv[1:];"
            "\ntry:\n    runpy.run_module('mammo.embed', run_name='__main__')\nexcept SystemExit:\n    pass"
            "\nprint('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        overrides = [
            f"embed.backbone={args.backbone}",
            f"img_size={args.size}",
            f"data.demo.n_patients={patients}",
            "data.demo.height=320",
            "data.demo.width=256",
            "data.cache_mode=disk",
            "data.num_workers=0",
            "embed.projections=[pca]",
            f"paths.output_dir={tmp}",
        ]
        out = subprocess.run(
            [sys.executable, "-c", code, *overrides], capture_output=True, text=True, check=True
        )
        kib = int(out.stdout.strip().rsplit("RSS", 1)[1])
        summary = json.loads(next(Path(tmp).glob("embeddings_*/summary.json")).read_text())
        return kib / 1024, summary["num_images"]


if __name__ == "__main__":
    main()
