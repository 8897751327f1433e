"""Throughput of mammo.train's fit loop vs a plain PyTorch loop, measured in one run.

    python scripts/bench_train.py [--model efficientnetb0] [--sizes 128] [--batch-size 16] [--steps 30]
    python scripts/bench_train.py --model classifier --backbone vit_small_patch16_224 --sizes 512   # a ViT

Both sides train the same model on the same in-memory float16 batches ([B, 1, H, W], as mammo's
loader hands them over), so data loading is out of the picture, with the same optimizer, batch
size, number of steps, precision and memory format:

- mammo: the run's own parts, composed from ``conf/train.yaml`` and built by
  ``mammo.workflows.components`` exactly as ``python -m mammo.train`` builds them: the model, every
  callback a run uses (best and last checkpoints, run artifacts, random state, the NaN/inf guard,
  early stopping, the progress bar), the CSV logger and the Trainer. On a GPU that is
  ``trainer=gpu`` (bf16-mixed where the GPU has it, cuDNN benchmark with ``deterministic=false``)
  and channels_last inputs (the datamodule's ``on_after_batch_transfer``).
- plain: a bare loop over the same model with the same autocast, memory format and optimizer.

The two sides alternate three times, so drifts in machine load hit both; the best of each is
compared. Training-epoch time only (validation, checkpoints and plots are per-epoch extras). Prints
images/s of each side and the ratio for every size (goal: mammo >= 0.95 x plain), then the
multi-view model's (``model=multiview``, the same backbone, breasts of two views) images/s against
the image-level model's through the same fit loop on the same images (goal: >= 0.90 x), the device
(the GPU's name), and the time of ``python -m mammo.train --help`` (goal < 1.5 s). On a GPU the
default sizes are 512 and 1024x512 px (``--sizes 512 1024x512``: N or height x width).
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
import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist, instantiate
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mammo import CONFIG_DIR, TRUSTED_TARGETS  # noqa: E402
from mammo.artifacts.run_callbacks import RunArtifacts  # noqa: E402
from mammo.artifacts.rundir import register_resolvers  # noqa: E402
from mammo.artifacts.summary import RunSummary  # noqa: E402
from mammo.data.datamodule import DensityDataModule  # noqa: E402
from mammo.data.units import assignment_matrix  # noqa: E402
from mammo.models.device import autocast, to_device  # noqa: E402
from mammo.workflows.components import build_callbacks, build_trainer  # noqa: E402
from mammo.workflows.run_context import Run  # noqa: E402


def make_data(n: int, shape: tuple[int, int], seed: int = 0) -> TensorDataset:
    """``n`` float16 [1, H, W] images in [0, 1], labels of all four classes, row numbers."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, *shape, generator=g).half()
    return TensorDataset(x, torch.arange(n) % 4, torch.arange(n))


def parse_size(text: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``1024x512`` -> (1024, 512): an ``img_size`` as height x width."""
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


def size_name(shape: tuple[int, int]) -> str:
    return f"{shape[0]}" if shape[0] == shape[1] else f"{shape[0]}x{shape[1]}"


def run_config(args, shape: tuple[int, int], tmp: Path, cuda: bool, model: tuple[str, ...] = ()):
    """The composed ``mammo.train`` config for one benchmark size (``model``: other model overrides)."""
    overrides = [
        *(model or [f"model={args.model}", *([f"model.backbone={args.backbone}"] if args.backbone else [])]),
        f"img_size=[{shape[0]},{shape[1]}]",
        f"batch_size={args.batch_size}",
        "epochs=1",
        "scheduler=constant",
        "train_augment=false",
        "logger=csv",
        "callbacks=default",
        f"paths.output_dir={tmp}",
        f"paths.run_dir={tmp / 'run'}",
        "+trainer.limit_val_batches=1",
        *(["trainer=gpu", "deterministic=false"] if cuda else []),
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", overrides=overrides)


def fresh_model(cfg):
    torch.manual_seed(0)
    return instantiate(cfg.model, _convert_="all", num_classes=4, class_weights=[1.0] * 4)


class InMemoryData(L.LightningDataModule):
    """The benchmark's batches, moved to the device by mammo's own datamodule hook."""

    on_after_batch_transfer = DensityDataModule.on_after_batch_transfer

    def __init__(self, train: DataLoader, val: DataLoader) -> None:
        super().__init__()
        self.train, self.val, self.augment = train, val, None

    def train_dataloader(self) -> DataLoader:
        return self.train

    def val_dataloader(self) -> DataLoader:
        return self.val


def mammo_fit(cfg, data: InMemoryData, run_dir: Path) -> float:
    """Images/s of the training epoch of mammo's Trainer with all of a run's callbacks."""
    n = len(data.val.dataset)
    val_samples = pd.DataFrame(
        {"AccessionNumber": [f"A{i}" for i in range(n)], "image_id": [f"i{i}" for i in range(n)], "label": 0}
    )
    artifacts = RunArtifacts(run_dir, val_samples, [1, 2, 3, 4], cfg.monitor)
    timer = TrainTimer()
    summary = RunSummary(run_dir / "summary.json", "benchmark", run_dir.name, cfg.seed)
    run = Run(cfg, run_dir, summary, writes=True, artifacts=artifacts)
    trainer = build_trainer(run, [*build_callbacks(run), timer])
    trainer.fit(fresh_model(cfg), datamodule=data)
    return timer.seen / timer.seconds


class TrainTimer(L.Callback):
    """Times the training epoch, up to the last step's finished GPU work."""

    seen, seconds, _t = 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer, module):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1 and module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._t


def plain_loop(cfg, loader: DataLoader, device: torch.device) -> float:
    """Images/s of a bare loop: the same model, optimizer, autocast and memory format."""
    model = fresh_model(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y, _rows in loader:
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = model.loss(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def breast_batches(batch):
    """A batch of images as breasts of two views each (images 0 and 1 one breast, ...)."""
    images, labels, rows = torch.utils.data.default_collate(batch)
    return images, labels, rows, assignment_matrix(np.arange(len(labels)) // 2)


def multiview_compare(args, size: tuple[int, int], device: torch.device, tmp: Path) -> tuple[float, float]:
    """Images/s of mammo's fit loop for the image-level model and for ``model=multiview`` (the same
    backbone, breasts of two views) on the same images, batches of the same images; best of three
    alternating rounds each."""
    cuda = device.type == "cuda"
    image_cfg = run_config(args, size, tmp, cuda)
    multiview = ("model=multiview", f"model.backbone={image_cfg.model.backbone}")
    view_cfg = run_config(args, size, tmp, cuda, multiview)
    data = make_data(args.steps * args.batch_size, size)
    val = make_data(args.batch_size, size, seed=1)

    def loaders(collate=None):
        kwargs = {"batch_size": args.batch_size, "pin_memory": cuda, "collate_fn": collate}
        return InMemoryData(DataLoader(data, **kwargs), DataLoader(val, **kwargs))

    results: dict[str, list[float]] = {"image": [], "multiview": []}
    for i in range(3):
        results["image"].append(mammo_fit(image_cfg, loaders(), tmp / f"image_{size_name(size)}_r{i}"))
        results["multiview"].append(
            mammo_fit(view_cfg, loaders(breast_batches), tmp / f"mv_{size_name(size)}_r{i}")
        )
    return max(results["image"]), max(results["multiview"])


def cfg_precision(args, device: torch.device) -> str:
    """The Trainer's precision the GPU preset resolves to (bf16-mixed where the GPU has bf16)."""
    with tempfile.TemporaryDirectory() as tmp:
        return str(run_config(args, (64, 64), Path(tmp), device.type == "cuda").trainer.precision)


def help_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mammo.train", "--help"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def compare(args, size: tuple[int, int], device: torch.device, tmp: Path) -> tuple[float, float]:
    """The best images/s of each side over three alternating rounds at ``size`` (height, width)."""
    cfg = run_config(args, size, tmp, device.type == "cuda")
    cuda = device.type == "cuda"
    loader = DataLoader(
        make_data(args.steps * args.batch_size, size), batch_size=args.batch_size, pin_memory=cuda
    )
    val = DataLoader(make_data(args.batch_size, size, seed=1), batch_size=args.batch_size, pin_memory=cuda)
    warm = DataLoader(make_data(2 * args.batch_size, size), batch_size=args.batch_size, pin_memory=cuda)
    torch.backends.cudnn.benchmark = cuda  # what trainer=gpu sets with deterministic=false
    torch.use_deterministic_algorithms(cfg.deterministic is True)  # what the Trainer sets
    plain_loop(cfg, warm, device)  # warm-up: kernels, cuDNN's choices, the allocator
    results: dict[str, list[float]] = {"plain": [], "mammo": []}
    for i in range(3):
        torch.backends.cudnn.benchmark = cuda  # the Trainer sets it; both sides run alike
        results["plain"].append(plain_loop(cfg, loader, device))
        results["mammo"].append(mammo_fit(cfg, InMemoryData(loader, val), tmp / f"{size_name(size)}px_r{i}"))
    return max(results["plain"]), max(results["mammo"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnetb0", help="a conf/model option")
    parser.add_argument(
        "--sizes", nargs="+", help="img_size values, N or HxW (default: 128; GPU: 512 1024x512)"
    )
    parser.add_argument("--backbone", help="another timm backbone (with --model classifier), e.g. a ViT")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    args = parser.parse_args()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("mammo").setLevel(logging.WARNING)
    register_resolvers()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [parse_size(s) for s in args.sizes or (["512", "1024x512"] if device.type == "cuda" else ["128"])]
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    precision = f"{cfg_precision(args, device)}, channels_last" if device.type == "cuda" else "32-true"
    model = f"{args.model} ({args.backbone})" if args.backbone else args.model
    print(f"model={model} batch_size={args.batch_size} steps={args.steps} on {where} ({precision})")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            plain, framework = compare(args, size, device, Path(tmp))
            print(
                f"  {size_name(size):>8} px: plain PyTorch loop {plain:8.2f} images/s, "
                f"mammo {framework:8.2f} images/s"
            )
            print(f"           ratio mammo/plain: {framework / plain:.3f}  (goal >= 0.95)")
            image, multiview = multiview_compare(args, size, device, Path(tmp))
            print(
                f"  {size_name(size):>8} px: image-level model {image:8.2f} images/s, "
                f"multi-view (breasts of 2 views) {multiview:8.2f} images/s"
            )
            print(f"           ratio multi-view/image-level: {multiview / image:.3f}  (goal >= 0.90)")
    print(f"python -m mammo.train --help: {help_seconds():.2f} s  (goal < 1.5 s)")


if __name__ == "__main__":
    with execution_whitelist(TRUSTED_TARGETS):  # as the entries name them (hydra.main)
        main()
