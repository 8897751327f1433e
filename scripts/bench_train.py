"""Throughput of mammo.train's Lightning fit loop vs a plain PyTorch loop, measured in one run.

Both train the same model on the same in-memory batches (so data loading is out of the picture)
with the same optimizer, batch size and number of steps; the framework side uses mammo's
DensityClassifier, Trainer settings and callbacks (checkpoint, run artifacts, progress bar). Also
times ``python -m mammo.train --help``.

    python scripts/bench_train.py [--model efficientnet_b0] [--img-size 128] [--batch-size 16] [--steps 30]

Prints images/s for each and the ratio (goal: framework >= 0.97 x plain; --help < 1.5 s).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_data(n: int, img_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, img_size, img_size, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return TensorDataset(x, y, torch.arange(n))


def plain_loop(model, loader, epochs: int) -> float:
    optimizer = model.configure_optimizers()  # scheduler="constant": a bare optimizer
    model.train()
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for x, y, _rows in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y, weight=model.class_weights)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def lightning_loop(model, loader, epochs: int, run_dir: Path) -> float:
    import pandas as pd
    from lightning.pytorch.callbacks import RichProgressBar

    from mammo.artifacts.callbacks import BestModelCheckpoint, RunArtifacts

    n = len(loader.dataset)
    samples = pd.DataFrame(
        {
            "AccessionNumber": [f"A{i}" for i in range(n)],
            "image_id": [f"img{i}" for i in range(n)],
            "label": [0] * n,
        }
    )
    timer = _TrainTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        deterministic=True,
        default_root_dir=run_dir,
        callbacks=[
            RichProgressBar(),
            RunArtifacts(run_dir, samples, [1, 2, 3, 4], "val_kappa"),
            BestModelCheckpoint(run_dir, "val_kappa", "max"),
            timer,
        ],
    )
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    return timer.seen / timer.seconds


class _TrainTimer(L.Callback):
    """Times the training epoch (validation, checkpointing and plots are per-epoch extras)."""

    seen, seconds, _t = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer, module):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += len(batch[1])
        self.seconds = time.perf_counter() - self._t


def help_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mammo.train", "--help"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)
    # the same deterministic kernels on both sides (mammo's default is deterministic=true)
    torch.use_deterministic_algorithms(True)
    from mammo.models.classifier import DensityClassifier

    data = make_data(args.steps * args.batch_size, args.img_size)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)

    def fresh_model():
        torch.manual_seed(0)
        return DensityClassifier(
            arch="bench",
            backbone=args.model,
            learning_rate=1e-3,
            scheduler="constant",
            class_weights=[1.0, 1.0, 1.0, 1.0],
        )

    plain_loop(
        fresh_model(),
        DataLoader(make_data(2 * args.batch_size, args.img_size), batch_size=args.batch_size),
        1,
    )  # warm-up
    results = {"plain": [], "lightning": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):  # alternate, so drifts in machine load hit both sides
            results["plain"].append(plain_loop(fresh_model(), loader, 1))
            results["lightning"].append(lightning_loop(fresh_model(), loader, 1, Path(tmp) / f"r{i}"))
    plain, framework = max(results["plain"]), max(results["lightning"])
    print(f"model={args.model} img_size={args.img_size} batch_size={args.batch_size} steps={args.steps}")
    print(f"plain PyTorch loop : {plain:8.2f} images/s")
    print(f"mammo (Lightning)  : {framework:8.2f} images/s")
    print(f"ratio framework/plain: {framework / plain:.3f}  (goal >= 0.97)")
    print(f"python -m mammo.train --help: {help_seconds():.2f} s  (goal < 1.5 s)")


if __name__ == "__main__":
    main()
