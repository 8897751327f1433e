"""Data-layer benchmark: uncached vs cached images/s, and the cost of preprocessing a large image.

    python scripts/bench_data.py [--files 4] [--entries 256] [--size 512]

In one run, on mammogram-like 4000x3000 14-bit images written here (smooth tissue, flat
background, a detector's noise) as uncompressed, RLE, JPEG 2000, JPEG-LS and JPEG Lossless:

  (a) mammo's uncached path: DICOM decode + preprocessing (window, crop, orient, resize)
  (d) each installed decoder's decode alone (dcmread + pixel_array), one thread like (a): the
      fastest is the floor for any uncached work (goal a/d <= 1.15)
  (b) a cached epoch: the disk cache through mammo's Dataset and a DataLoader (batch 16)
  (c) the floor of any cached epoch: the same bytes as one file, read in one sequential pass
      of batch-sized reads (16 entries) into one buffer: the disk's, or the page cache's, bandwidth
  (e) the spec's format for comparison: torch.load of one [3, H, W] float32 .pt per image

and prints the ratios b/a (bar >= 50), b/c (goal >= 0.8), the peak memory of preprocessing one
large image (measured in a fresh process), the cache fill's scaling with loader workers, and the
share of the model input that is breast for a square (``--size``) and a tall (2:1) ``img_size``.
"""

from __future__ import annotations

import argparse
import json
import os
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


CODECS = {  # name -> transfer syntax UID (None: uncompressed)
    "uncompressed": None,
    "rle": "1.2.840.10008.1.2.5",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "jpeg_ls": "1.2.840.10008.1.2.4.80",
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",
}


def write_large(folder: Path, n: int) -> dict[str, list[Path]]:
    """``n`` mammogram-like 4000x3000 14-bit images (smooth tissue, flat background, a detector's
    noise) per codec: RLE and JPEG 2000 encoded by pydicom, JPEG-LS and JPEG Lossless by GDCM."""
    from mammo.data.demo import phantom, write_dicom

    rng = np.random.default_rng(0)
    files: dict[str, list[Path]] = {codec: [] for codec in CODECS}
    for i in range(n):
        laterality = "LR"[i % 2]
        stored = np.rint(phantom(1 + i % 4, laterality, "MLO", SHAPE, rng, noise=0.001) * 16383).astype(
            np.uint16
        )
        for codec, syntax in CODECS.items():
            path = folder / codec / f"{i}.dcm"
            kwargs = {"laterality": laterality, "bits_stored": 14}
            if codec in ("jpeg_ls", "jpeg_lossless"):
                gdcm_encode(files["uncompressed"][-1], path, syntax)
            else:
                write_dicom(
                    path, stored, patient_id=f"P{i}", accession=f"A{i}", transfer_syntax=syntax, **kwargs
                )
            files[codec].append(path)
    return files


def gdcm_encode(src: Path, dst: Path, syntax: str) -> None:
    import gdcm

    dst.parent.mkdir(parents=True, exist_ok=True)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    assert reader.Read() and (change.SetInput(reader.GetImage()) or True) and change.Change(), syntax
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), dst


def decode_floor(paths: list[Path], repeats: int) -> dict[str, float]:
    """Seconds per image of each installed pydicom plugin's decode alone (dcmread + pixel_array)."""
    import pydicom
    from pydicom.pixels import get_decoder

    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    plugins = get_decoder(syntax).available_plugins if syntax.is_compressed else ["native"]

    def decode(path, plugin):
        ds = pydicom.dcmread(path)
        if plugin != "native":
            ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array

    return {
        plugin: sum(timed(lambda p=p, plugin=plugin: decode(p, plugin), repeats) for p in paths) / len(paths)
        for plugin in plugins
    }


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

    import torch

    from mammo.data.preprocess import Preprocessing

    pre = Preprocessing(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(
            f"writing {args.files} mammogram-like {SHAPE[0]}x{SHAPE[1]} 14-bit images per codec ...",
            flush=True,
        )
        files = write_large(tmp / "dicom", args.files)
        rows = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the decoders are single-threaded: compare at the same count
        for codec, paths in files.items():
            floors = decode_floor(paths, args.repeats)
            a = sum(timed(lambda p=p: pre(p), args.repeats) for p in paths) / len(paths)
            rows[codec] = (a, floors)
        torch.set_num_threads(threads)
        epochs = cached_epochs(tmp, files, pre, args.entries, args.repeats)
        memory = peak_memory(files["rle"][0], files["rle"][-1], args.size)
        scaling = fill_scaling(files["rle"] * 8, pre)  # 4 images per loader batch: enough batches
        shares = {
            shape: breast_share(files["uncompressed"], shape)
            for shape in (args.size, (2 * args.size, args.size))
        }
    report(rows, epochs, memory, args.size, args.repeats)
    one, two = scaling
    print(f"\ncache fill of {len(files['rle']) * 8} RLE images: 1 worker {one:.2f} s, 2 workers {two:.2f} s")
    print(f"  speed-up = {one / two:.2f}   (goal >= 1.7 on 2 cores; data.num_workers defaults to every CPU)")
    print("\nshare of the model input that is breast (mean over the images):")
    for shape, share in shares.items():
        print(f"  img_size={list(shape) if isinstance(shape, tuple) else shape}: {share:.2f}")


def breast_share(paths: list[Path], img_size) -> float:
    """Mean share of the preprocessed image's pixels that are breast: brighter than the
    background, with the threshold mammo's breast finder uses (``breast_region``)."""
    from mammo.data.preprocess import Preprocessing, otsu_threshold

    pre = Preprocessing(img_size)
    shares = []
    for path in paths:
        image = pre(path)
        low, high = np.percentile(image, [2.0, 98.0])
        shares.append(float((image > min(low + 0.1 * (high - low), otsu_threshold(image))).mean()))
    return float(np.mean(shares))


def fill_scaling(paths: list[Path], pre) -> tuple[float, float]:
    """Seconds to fill a memory cache of ``paths`` with 1 and with 2 loader workers."""
    import pandas as pd

    from mammo.data.dataset import ImageSource, fill_cache

    table = pd.DataFrame({"path": [str(p) for p in paths], "laterality": [""] * len(paths)})
    samples = type("Samples", (), {"table": table})()
    seconds = []
    for workers in (1, 2):
        start = time.perf_counter()
        fill_cache(
            ImageSource(table.assign(AccessionNumber="", image_id="", sha256=""), pre),
            samples,
            "memory",
            workers,
            False,
        )
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def cached_epochs(tmp: Path, files: dict, pre, entries: int, repeats: int) -> tuple:
    """Images/s of (b) a cached epoch through mammo's Dataset + DataLoader, (c) one sequential
    read of the same bytes, (e) one ``torch.load`` of a [3, H, W] float32 ``.pt`` file per image;
    then (b) and (c) from the disk itself (page cache dropped before each run; root only), or
    ``None`` where the page cache cannot be dropped."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from mammo.data.cache import DiskCache
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
            assert tuple(x.shape[-2:]) == pre.shape

    sequential_read = sequential_reader(source.entries, tmp / "all_entries.bin", 16 * cache.nbytes)

    def pt_epoch():
        for pt in pt_files:
            torch.load(pt)

    hot = tuple(entries / timed(f, repeats) for f in (cached_epoch, sequential_read, pt_epoch))
    cold = (
        tuple(entries / cold_seconds(f, repeats) for f in (cached_epoch, sequential_read))
        if can_drop_cache()
        else None
    )
    return (*hot, cold)


def sequential_reader(entries: list[Path], joined: Path, batch_bytes: int):
    """The floor: every entry's bytes back to back in ``joined``, read in one sequential pass of
    batch-sized reads into one reused buffer (any loader must at least bring each batch's bytes
    into the memory that holds the batch)."""
    with open(joined, "wb") as out:
        for entry in entries:
            out.write(entry.read_bytes())
    chunk = memoryview(bytearray(batch_bytes))

    def sequential_read():
        with open(joined, "rb", buffering=0) as f:
            while f.readinto(chunk):
                pass

    return sequential_read


def can_drop_cache() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


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


def report(rows: dict, epochs: tuple, memory: dict, size: int, repeats: int) -> None:
    import torch

    b, c, e, cold = epochs
    print(
        f"\nimages/s at {size}x{size} (medians of {repeats} runs; one process, "
        f"{torch.get_num_threads()} torch threads):"
    )
    print("  per codec, one thread: (a) mammo's decode + preprocess, (d) each decoder's decode alone")
    for codec, (a, floors) in rows.items():
        decoders = ", ".join(
            f"{name} {t * 1e3:.0f} ms" for name, t in sorted(floors.items(), key=lambda x: x[1])
        )
        fastest = min(floors.values())
        ratio = f"a/d_fastest = {a / fastest:.2f} (goal <= 1.15)"
        print(f"  {codec:>13}: (a) {a * 1e3:7.1f} ms   (d) {decoders}   {ratio}")
    print(f"  (b) cached epoch (mammo Dataset + DataLoader): {b:9.0f}/s")
    print(f"  (c) the same bytes in one sequential read:     {c:9.0f}/s")
    print(f"  (e) torch.load of a [3,H,W] float32 .pt each:  {e:9.0f}/s")
    a_rle = rows["rle"][0]
    print("\nratios:")
    print(f"  b/a = {b * a_rle:8.1f}   cached epoch vs uncached RLE decode+preprocess (bar >= 50)")
    print(
        f"  b/c = {b / c:8.2f}   cached epoch vs one sequential read of its bytes (goal >= 0.8), page cache"
    )
    if cold is not None:
        print(
            f"  b/c = {cold[0] / cold[1]:8.2f}   the same from the disk (page cache dropped): "
            f"{cold[0]:.0f}/s vs {cold[1]:.0f}/s"
        )
    print(f"  b/e = {b / e:8.2f}   mammo's cache vs per-image .pt files")
    grown, decode_only = memory["preprocess_kb"] / 1024, memory["decode_kb"] / 1024
    decoded = SHAPE[0] * SHAPE[1] * 2 / 2**20
    print(
        f"\npeak memory for one {SHAPE[0]}x{SHAPE[1]} 16-bit RLE image ({decoded:.0f} MiB decoded): "
        f"decode + preprocess +{grown:.0f} MiB RSS, pydicom decode alone +{decode_only:.0f} MiB"
    )


if __name__ == "__main__":
    main()
