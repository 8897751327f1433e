"""Data-layer benchmark: uncached vs cached images/s, and the cost of preprocessing a large image.

    python scripts/bench_data.py [--files 4] [--entries 256] [--size 512]

In one run, on synthetic 4000x3000 16-bit mammograms written here (RLE and uncompressed):

  (a) mammo's uncached path: DICOM decode + preprocessing (window, crop, orient, resize)
  (b) a cached epoch: the disk cache through mammo's Dataset and a DataLoader (batch 16)
  (c) a raw NumPy read of the same cache files (np.fromfile: the physical limit)
  (d) pydicom's decode alone (dcmread + pixel_array: the floor for any uncached work)
  (e) the spec's format for comparison: torch.load of one [3, H, W] float32 .pt per image

and prints the ratios b/a (bar >= 50), b/c (bar >= 0.5) and a/d (bar <= 1.25 for a compressed
image; for an uncompressed one the decode is only a file read, so a/d shows the whole cost of
preprocessing), plus the peak memory of preprocessing one large image, measured in a fresh
process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (4000, 3000)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_large(folder: Path, n: int) -> dict[str, list[Path]]:
    from pydicom.uid import RLELossless

    from mammo.data.demo import phantom, write_dicom

    rng = np.random.default_rng(0)
    files: dict[str, list[Path]] = {"rle": [], "uncompressed": []}
    for i in range(n):
        laterality = "LR"[i % 2]
        image = phantom(1 + i % 4, laterality, "MLO", SHAPE, rng)
        stored = np.rint(image * 65535 * 0.95).astype(np.uint16)
        for codec, syntax in (("rle", RLELossless), ("uncompressed", None)):
            path = folder / codec / f"{i}.dcm"
            kwargs = {"laterality": laterality, "bits_stored": 16, "transfer_syntax": syntax}
            files[codec].append(write_dicom(path, stored, patient_id=f"P{i}", accession=f"A{i}", **kwargs))
    return files


def peak_memory(path: Path, warmup: Path, size: int) -> dict:
    """Peak RSS growth while preprocessing ``path`` once, in a fresh process whose lazy imports
    and torch kernels were warmed up on another file first (RSS sampled every millisecond)."""
    code = f"""
import json, threading, time
from mammo.data.preprocess import Preprocessing
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def peak_of(fn):
    base, peak, done = rss(), [0], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss()); time.sleep(0.001)
    t = threading.Thread(target=watch); t.start()
    fn()
    done.set(); t.join()
    return (max(peak[0], rss()) - base) // 1024
pre = Preprocessing({size})
pre("{warmup}")
import pydicom
print(json.dumps({{"decode_kb": peak_of(lambda: pydicom.dcmread("{path}").pixel_array),
                  "preprocess_kb": peak_of(lambda: pre("{path}"))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=4, help="large DICOMs per codec")
    parser.add_argument("--entries", type=int, default=256, help="cache entries in the cached epoch")
    parser.add_argument("--size", type=int, default=512, help="img_size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import pydicom

    from mammo.data.preprocess import Preprocessing

    pre = Preprocessing(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(
            f"writing {args.files} synthetic {SHAPE[0]}x{SHAPE[1]} 16-bit mammograms per codec ...",
            flush=True,
        )
        files = write_large(tmp / "dicom", args.files)
        rows = {}
        for codec, paths in files.items():
            d = sum(timed(lambda p=p: pydicom.dcmread(p).pixel_array, args.repeats) for p in paths) / len(
                paths
            )
            a = sum(timed(lambda p=p: pre(p), args.repeats) for p in paths) / len(paths)
            rows[codec] = (a, d)
        epochs = cached_epochs(tmp, files, pre, args.entries, args.repeats)
        memory = peak_memory(files["rle"][0], files["rle"][-1], args.size)
    report(rows, epochs, memory, args.size, args.repeats)


def cached_epochs(tmp: Path, files: dict, pre, entries: int, repeats: int) -> tuple[float, float, float]:
    """Images/s of (b) a cached epoch through mammo's Dataset + DataLoader, (c) a raw NumPy read
    of the same entries, (e) one ``torch.load`` of a [3, H, W] float32 ``.pt`` file per image."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from mammo.data.cache import HEADER, DiskCache
    from mammo.data.dataset import DicomDataset, ImageSource, collate

    cache = DiskCache(tmp / "cache", pre)  # the preprocessed images, repeated under distinct names
    images = [pre(p).astype(np.float16) for p in files["uncompressed"]]
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
    pt_files = []
    for i, entry in enumerate(source.entries):
        cache.write(entry, images[i % len(images)])
        pt_files.append(entry.with_suffix(".pt"))
        torch.save(
            torch.from_numpy(images[i % len(images)].astype(np.float32)).expand(3, -1, -1).clone(),
            pt_files[-1],
        )
    loader = DataLoader(DicomDataset(table, source), batch_size=16, num_workers=0, collate_fn=collate)

    def cached_epoch():
        for x, _, _ in loader:
            assert x.shape[-1] == pre.img_size

    def raw_numpy():
        for entry in source.entries:
            np.fromfile(entry, dtype=np.float16, offset=HEADER.size)

    def pt_epoch():
        for pt in pt_files:
            torch.load(pt)

    return tuple(entries / timed(f, repeats) for f in (cached_epoch, raw_numpy, pt_epoch))


def report(rows: dict, epochs: tuple[float, float, float], memory: dict, size: int, repeats: int) -> None:
    import torch

    b, c, e = epochs
    print(
        f"\nimages/s at {size}x{size} (medians of {repeats} runs; one process, "
        f"{torch.get_num_threads()} torch threads):"
    )
    for codec, (a, d) in rows.items():
        print(
            f"  {codec:>12}: (a) decode+preprocess {1 / a:7.2f}/s ({a * 1e3:6.1f} ms)   "
            f"(d) pydicom decode {1 / d:7.2f}/s ({d * 1e3:6.1f} ms)   a/d = {a / d:.2f}"
        )
    print(f"  (b) cached epoch (mammo Dataset + DataLoader): {b:9.0f}/s")
    print(f"  (c) raw np.fromfile of the same entries:       {c:9.0f}/s")
    print(f"  (e) torch.load of a [3,H,W] float32 .pt each:  {e:9.0f}/s")
    a_rle, d_rle = rows["rle"]
    print("\nratios:")
    print(f"  b/a = {b * a_rle:8.1f}   cached epoch vs uncached RLE decode+preprocess (bar >= 50)")
    print(f"  b/c = {b / c:8.2f}   cached epoch vs raw NumPy read (bar >= 0.5)")
    print(f"  a/d = {a_rle / d_rle:8.2f}   RLE: preprocessing on top of pydicom's decode (bar <= 1.25)")
    a_raw, d_raw = rows["uncompressed"]
    print(f"  a/d = {a_raw / d_raw:8.2f}   uncompressed (decode is a plain read; see the docstring)")
    print(f"  b/e = {b / e:8.2f}   mammo's cache vs per-image .pt files")
    grown, decode_only = memory["preprocess_kb"] / 1024, memory["decode_kb"] / 1024
    decoded = SHAPE[0] * SHAPE[1] * 2 / 2**20
    print(
        f"\npeak memory for one {SHAPE[0]}x{SHAPE[1]} 16-bit RLE image ({decoded:.0f} MiB decoded): "
        f"decode + preprocess +{grown:.0f} MiB RSS, pydicom decode alone +{decode_only:.0f} MiB"
    )


if __name__ == "__main__":
    main()
