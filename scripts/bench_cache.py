"""Cached-epoch benchmark: mammo's disk cache against one sequential read of the same bytes.

    python scripts/bench_cache.py [--entries 256] [--size 512] [--repeats 5] [--beyond-ram]

In one run, over ``--entries`` cache entries of preprocessed mammogram-like images:

  (b) a cached epoch as a run reads it: the disk cache through mammo's Dataset and the loader a run
      builds (``mammo.data.datamodule.batch_loader`` with a run's default settings: batch 16,
      ``data.num_workers`` every CPU, which fill the cache and are the threads that read each
      cached batch in the training process), in the training order (``EpochShuffle``: a full
      shuffle, a new one per epoch)
  (c) the floor of any cached epoch: the same bytes (the cache's shard: the entries, one after
      another) read in one sequential pass of batch-sized reads into one reused buffer (goal
      b/c >= 0.8)
  (c2) the same sequential read into fresh memory for every batch, as a loader that hands each
      batch over (and so cannot reuse its memory) must do
  (c3) the same bytes read by as many threads as mammo reads a batch with, each a contiguous part
      sequentially (for reference: the issue's floor, c, is one sequential read)
  (e) the spec's format for comparison: torch.load of one [3, H, W] float32 .pt per image
  (w) the same epoch handed over by loader workers (every CPU), as runs read it before, against
  (t) torch's DataLoader handing over batches of the same size from as many workers, reading nothing
  (l) LitData, Lightning's streaming format, on the same preprocessed images (``litdata.optimize``,
      then ``StreamingDataset(shuffle=True)`` + ``StreamingDataLoader``, batch 16, in-process):
      (l1) its default ``batch_decode="auto"``, (l0) ``batch_decode=0`` (each item decoded once);
      it shuffles the chunk order and the items within a chunk, not the whole epoch. Skipped with
      one line when ``litdata`` is not installed (``pip install litdata``)

  (m) the growth of the process's resident memory while it reads caches of ``--entries`` and of 4x
      as many entries (and with ``--beyond-ram``, of 1.25x the machine's RAM), as a run reads them

All are measured from the page cache; b, c and w then from the disk (page cache dropped before each run;
root only). b/a compares the cached epoch with the uncached path for one large RLE image.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from functools import partial
from pathlib import Path

import numpy as np
from bench_data import SHAPE, timed

BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=256)
    parser.add_argument("--size", type=int, default=512, help="img_size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--beyond-ram",
        action="store_true",
        help="also read a cache 1.25x this machine's RAM (minutes, and that much free disk)",
    )
    args = parser.parse_args()

    from mammo.artifacts.rundir import available_cpus
    from mammo.data.images import Preprocessing

    pre = Preprocessing(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rle, images = large_images(tmp)
        uncached = timed(lambda: pre(rle), args.repeats)
        workers = available_cpus()
        source, dataset = cache_of(tmp, pre, images, args.entries, workers)
        args.threads = source.cache.threads
        hot, cold = epochs(tmp, source, dataset, workers, args.entries, args.repeats)
        hot.update(litdata_epochs(tmp, source, args.entries, args.repeats))
        memory = memory_growth(tmp, pre, images, workers, (args.entries, 4 * args.entries), epochs=3)
        if args.beyond_ram:
            entries = math.ceil(1.25 * ram_bytes() / source.cache.nbytes)
            memory.update(memory_growth(tmp, pre, images, workers, (entries,), epochs=1))
    report(hot, cold, uncached, workers, args)
    print("\nresident memory while reading a cache as a run reads it, after its first epoch (VmRSS growth):")
    for entries, (grown, size, read) in memory.items():
        print(
            f"  {entries:6d} entries ({size / 2**20:6.0f} MiB of cache, {read} epochs): "
            f"+{grown / 2**20:4.0f} MiB"
        )
    print(
        f"  (RAM here: {ram_bytes() / 2**20:.0f} MiB)"
        if args.beyond_ram
        else "  (--beyond-ram: a cache larger than RAM)"
    )
    print("  (goal: the same for every size; the page cache holds the data, not the process)")


def ram_bytes() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))


def memory_growth(
    tmp: Path, pre, images: list[Path], workers: int, sizes: tuple[int, ...], epochs: int
) -> dict:
    """The growth of this process's resident memory over ``epochs`` epochs of caches of ``sizes``
    entries (each cache built first, in a folder of its own, and removed afterwards), after one
    epoch that allocates the batch memory; and the caches' sizes in bytes."""
    out = {}
    for entries in sizes:
        folder = tmp / f"rss_{entries}"
        source, dataset = cache_of(folder, pre, images, entries, workers)
        loader, order = run_loader(dataset, workers, folder / "cache")
        drain(loader, order)  # the batch buffers, allocated once
        before = resident_bytes()
        for _ in range(epochs):
            drain(loader, order)
        size = sum(p.stat().st_size for p in source.cache.folder.glob("*.pack"))
        out[entries] = (max(0, resident_bytes() - before), size, epochs)
        del loader, dataset, source
        shutil.rmtree(folder)
    return out


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def large_images(tmp: Path) -> tuple[Path, list[np.ndarray]]:
    """One RLE 4000x3000 14-bit phantom (the uncached path's cost) and four images' worth of
    preprocessed content for the entries (uncompressed phantoms)."""
    from mammo.data.demo import phantom, write_dicom

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        stored = np.rint(phantom(1 + i, "LR"[i % 2], "MLO", SHAPE, rng, noise=0.001) * 16383).astype(
            np.uint16
        )
        syntax = "1.2.840.10008.1.2.5" if i == 0 else None
        paths.append(tmp / "dicom" / f"{i}.dcm")
        write_dicom(
            paths[-1], stored, patient_id=f"P{i}", accession=f"A{i}", bits_stored=14, transfer_syntax=syntax
        )
    return paths[0], paths


def cache_of(tmp: Path, pre, paths: list[Path], entries: int, workers: int):
    """``entries`` disk cache entries (the preprocessed images repeated under distinct names), the
    ImageSource reading them and mammo's Dataset over it, as a run with ``data.num_workers=workers``
    builds them."""
    import pandas as pd

    from mammo.data.cache import DicomDataset, DiskCache, ImageSource
    from mammo.data.images import Facts

    cache = DiskCache(tmp / "cache", pre, run_settings(workers, tmp / "cache").read_threads())
    images = [pre(p).astype(np.float16) for p in paths]
    table = pd.DataFrame(
        {
            "path": [""] * entries,
            "laterality": [""] * entries,
            "AccessionNumber": [f"A{i}" for i in range(entries)],
            "image_id": [f"img{i}" for i in range(entries)],
            "sha256": [f"{i:064x}" for i in range(entries)],
            "label": np.arange(entries) % 4,
        }
    )
    source = ImageSource(table, pre, cache)
    for i, entry in enumerate(source.entries):
        cache.write(entry, images[i % len(images)], Facts())
    return source, DicomDataset(table, source)


def run_settings(workers: int, cache_dir: Path):
    """A run's loading settings (its defaults: batch 16, ``data.num_workers`` every CPU)."""
    from mammo.data.settings import LoaderSettings

    return LoaderSettings(BATCH, workers, "disk", str(cache_dir), train_augment=False, seed=42)


def run_loader(dataset, workers: int, cache_dir: Path):
    """The loader a run reads the cached ``dataset`` with (its default settings), and its sampler:
    ``EpochShuffle``, whose ``set_epoch`` gives every timed epoch the next epoch's order."""
    from mammo.data.datamodule import batch_loader
    from mammo.data.order import EpochShuffle

    settings = run_settings(workers, cache_dir)
    sampler = EpochShuffle(dataset, settings.seed)
    return batch_loader(dataset, settings, sampler), sampler


def epochs(tmp: Path, source, dataset, workers: int, entries: int, repeats: int) -> tuple[dict, dict | None]:
    """Images/s of every side, from the page cache, and of b and c from the disk (or ``None``)."""
    from torch.utils.data import DataLoader

    from mammo.data.cache import collate
    from mammo.data.order import EpochShuffle

    (joined,) = source.cache.folder.glob("*.pack")  # the pack: the entries, one after another
    batch_bytes = BATCH * source.cache.nbytes
    loader, order = run_loader(dataset, workers, tmp / "cache")
    shuffled = EpochShuffle(dataset, 42)
    with_workers = DataLoader(
        dataset,
        batch_size=BATCH,
        sampler=shuffled,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=True,
    )
    handover = DataLoader(
        Handover(entries, source.preprocessing.shape),
        batch_size=BATCH,
        num_workers=workers,
        collate_fn=as_is,
        persistent_workers=True,
    )
    sides = {
        "b": lambda: drain(loader, order),
        "c": sequential_read(joined, batch_bytes, fresh=False),
        "c2": sequential_read(joined, batch_bytes, fresh=True),
        "c3": threaded_read(joined, batch_bytes, source.cache.threads),
        "e": torch_load_epoch(source, tmp / "pt"),
        "w": lambda: drain(with_workers, shuffled),
        "t": lambda: drain(handover),
    }
    hot = {name: entries / timed(side, repeats) for name, side in sides.items()}
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        return hot, None
    return hot, {name: entries / cold_seconds(sides[name], repeats) for name in ("b", "c", "w")}


def drain(loader, order=None) -> None:
    """One epoch of ``loader`` (the next epoch's order of its ``EpochShuffle`` ``order``)."""
    if order is not None:
        order.set_epoch(order.epoch + 1)
    for batch in loader:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch["image"]
        images[:, :, :: images.shape[2] // 4 or 1].sum()  # touch the batch, as a training step does


def litdata_epochs(tmp: Path, source, entries: int, repeats: int) -> dict:
    """Images/s of LitData's in-process loader over the same preprocessed images (``l1``: its
    default ``batch_decode``; ``l0``: ``batch_decode=0``); nothing without ``litdata``."""
    try:
        import litdata
    except ImportError:
        print("(l) LitData: not installed here (pip install litdata); its sides are left out")
        return {}
    images = [source.cache.read(entry) for entry in source.entries]
    out = tmp / "litdata"
    with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):  # its progress
        litdata.optimize(
            fn=partial(litdata_item, images),
            inputs=list(range(entries)),
            output_dir=str(out),
            chunk_bytes="64MB",
            num_workers=1,
            mode="overwrite",
        )
    sides = {}
    for name, decode in (("l1", "auto"), ("l0", 0)):
        dataset = litdata.StreamingDataset(str(out), shuffle=True, seed=42, batch_decode=decode)
        loader = litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=0)
        sides[name] = entries / timed(lambda loader=loader: drain(loader), repeats)
    return sides


def litdata_item(images: list, i: int) -> dict:
    return {"image": images[i][None], "label": i % 4}


class Handover:
    """Batches of the cache's shape with nothing read: what torch's loader workers cost alone."""

    def __init__(self, n: int, shape: tuple[int, int]) -> None:
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        import torch

        images = torch.from_numpy(np.ones((len(indices), 1, *self.shape), np.float16))
        return images, torch.zeros(len(indices)), torch.zeros(len(indices))


def as_is(batch):
    return batch


def sequential_read(joined: Path, batch_bytes: int, fresh: bool):
    """The floor: ``joined`` read in one sequential pass of batch-sized reads, into one reused
    buffer or (``fresh``) into new memory for each batch."""
    reused = memoryview(bytearray(batch_bytes))

    def read():
        with open(joined, "rb", buffering=0) as f:
            held = None  # like a training loop, hold the last batch while the next one is read
            while f.readinto(batch := np.empty(batch_bytes, np.uint8) if fresh else reused):
                held = batch
        return held

    return read


def threaded_read(joined: Path, batch_bytes: int, threads: int):
    """The floor's read spread over ``threads`` threads, as mammo's batch reads are: each reads a
    contiguous part of ``joined`` sequentially, in reads of its share of a batch, into a buffer
    of its own that it reuses."""
    from concurrent.futures import ThreadPoolExecutor

    size, chunk = joined.stat().st_size, -(-batch_bytes // threads)
    buffers = [memoryview(bytearray(chunk)) for _ in range(threads)]
    pool = ThreadPoolExecutor(threads)

    def part(n: int) -> None:
        fd, start = os.open(joined, os.O_RDONLY), n * -(-size // threads)
        try:
            for offset in range(start, min(size, start + -(-size // threads)), chunk):
                os.preadv(fd, [buffers[n]], offset)
        finally:
            os.close(fd)

    return lambda: list(pool.map(part, range(threads)))


def torch_load_epoch(source, folder: Path):
    """One torch.load of a [3, H, W] float32 ``.pt`` per entry (the spec's cache format)."""
    import torch

    folder.mkdir()
    files = []
    for i, entry in enumerate(source.entries):
        image = torch.from_numpy(source.cache.read(entry).astype(np.float32))
        files.append(folder / f"{i}.pt")
        torch.save(image.expand(3, -1, -1).clone(), files[-1])
    return lambda: [torch.load(f) for f in files]


def cold_seconds(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` with the page cache dropped before each call (reads hit the disk)."""
    times = []
    for _ in range(repeats):
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(hot: dict, cold: dict | None, uncached: float, workers: int, args) -> None:
    print(
        f"cached epochs of {args.entries} entries at {args.size}x{args.size}, batch {BATCH} "
        f"(medians of {args.repeats}):"
    )
    print(f"  (b)  mammo, as a run reads it (shuffled, in-process):  {hot['b']:8.0f}/s")
    print(f"  (c)  one sequential read, one reused buffer:          {hot['c']:8.0f}/s")
    print(f"  (c2) one sequential read, fresh memory per batch:     {hot['c2']:8.0f}/s")
    print(f"  (c3) the same read split over {args.threads} threads (mammo's):      {hot['c3']:8.0f}/s")
    print(f"  (e)  torch.load of a [3,H,W] float32 .pt each:        {hot['e']:8.0f}/s")
    print(f"  (w)  mammo Dataset + DataLoader, {workers} workers:            {hot['w']:8.0f}/s")
    print(f"  (t)  torch DataLoader, {workers} workers, nothing read:        {hot['t']:8.0f}/s")
    if "l1" in hot:
        print(f"  (l1) LitData, batch_decode=auto (its default), in-process: {hot['l1']:8.0f}/s")
        print(f"  (l0) LitData, batch_decode=0, in-process:               {hot['l0']:8.0f}/s")
    print("\nratios:")
    print(f"  b/a  = {hot['b'] * uncached:8.1f}   cached epoch vs uncached RLE decode+preprocess (bar >= 50)")
    print(
        f"  b/c  = {hot['b'] / hot['c']:8.2f}   vs one sequential read into a reused buffer "
        "(goal >= 0.8), page cache"
    )
    print(f"  b/c2 = {hot['b'] / hot['c2']:8.2f}   vs the same read into fresh memory per batch")
    print(f"  b/c3 = {hot['b'] / hot['c3']:8.2f}   vs the same read by as many threads as mammo's reads")
    if cold is not None:
        print(
            f"  b/c  = {cold['b'] / cold['c']:8.2f}   from the disk (page cache dropped): "
            f"{cold['b']:.0f}/s vs {cold['c']:.0f}/s"
        )
        print(f"  w/c  = {cold['w'] / cold['c']:8.2f}   the same with {workers} workers: {cold['w']:.0f}/s")
    print(f"  b/e  = {hot['b'] / hot['e']:8.2f}   mammo's cache vs per-image .pt files")
    print(f"  w/t  = {hot['w'] / hot['t']:8.2f}   with workers vs torch's own hand-over of the same batches")
    if "l1" in hot:
        best = max(hot["l1"], hot["l0"])
        print(f"  b/l  = {hot['b'] / best:8.2f}   vs LitData at its best setting here (goal > 1)")


if __name__ == "__main__":
    main()
