"""Data-layer benchmark: the cost of decoding and preprocessing a large image, per codec.

    python scripts/bench_data.py [--files 4] [--size 512]

In one run, on mammogram-like 4000x3000 14-bit images written here (smooth tissue, flat
background, a detector's noise) as uncompressed, RLE, JPEG 2000, JPEG-LS and JPEG Lossless:

  (a) mammo's uncached path: DICOM decode + preprocessing (window, crop, orient, resize)
  (d) each installed decoder's decode alone (dcmread + pixel_array), one thread like (a)
  (r) the fastest library resize of the decoded image to the model input (OpenCV's ``INTER_AREA``
      on the 16-bit image, or Pillow's ``reduce`` + bilinear ``resize``, whichever is faster here;
      OpenCV when ``opencv-python-headless`` is installed), one thread
  (f) the floor of any uncached preprocessing: the fastest decode plus the fastest resize, as no
      preprocessing can skip one pass over the pixels and one resize (goal a/f <= 1.15). JPEG 2000,
      which mammo decodes at a reduced resolution (``data.j2k_reduce``), keeps its own goal:
      a <= 0.2 x its fastest full decode

and prints the peak memory of preprocessing one large image (measured in a fresh process), the
cache fill's scaling with loader workers, and the share of the model input that is breast for a
square (``--size``) and a tall (2:1) ``img_size``. Cached epochs: ``scripts/bench_cache.py``.
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


def resize_floor(paths: list[Path], size: int, repeats: int) -> dict[str, float]:
    """Seconds per image of each library's resize of the decoded image (16-bit, as decoded) to
    the model input's shape (the image fitted into ``size`` x ``size``, aspect kept), one thread."""
    import pydicom
    from PIL import Image

    decoded = [pydicom.dcmread(p).pixel_array for p in paths]

    def target(image) -> tuple[int, int]:  # (width, height), the letterbox's content
        scale = size / max(image.shape)
        return max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))

    def pillow(image):
        picture = Image.fromarray(image.astype(np.float32))
        width, height = target(image)
        factor = max(1, min(image.shape[0] // height, image.shape[1] // width))
        return np.asarray(picture.reduce(factor).resize((width, height), Image.Resampling.BILINEAR))

    sides = {"pillow reduce+resize": pillow}
    try:
        import cv2

        cv2.setNumThreads(1)
        sides["opencv INTER_AREA"] = lambda image: cv2.resize(
            image, target(image), interpolation=cv2.INTER_AREA
        )
    except ImportError:
        print(
            "(r) OpenCV: not installed here (pip install opencv-python-headless); Pillow alone is the floor"
        )
    return {
        name: sum(timed(lambda x=x, fn=fn: fn(x), repeats) for x in decoded) / len(decoded)
        for name, fn in sides.items()
    }


def peak_memory(path: Path, warmup: Path, size: int) -> dict:
    """Peak RSS growth while preprocessing ``path`` once, in a fresh process whose lazy imports
    and torch kernels were warmed up on another file first (RSS sampled every millisecond)."""
    code = f"""
import json, threading, time
from mammo.data.images import Preprocessing
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
    parser.add_argument("--size", type=int, default=512, help="img_size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from mammo.data.images import Preprocessing

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
            rows[codec] = (a, floors, resize_floor(paths, args.size, args.repeats))
        torch.set_num_threads(threads)
        memory = peak_memory(files["rle"][0], files["rle"][-1], args.size)
        scaling = fill_scaling(files["rle"] * 8, pre)  # 4 images per loader batch: enough batches
        shares = {
            shape: breast_share(files["uncompressed"], shape)
            for shape in (args.size, (2 * args.size, args.size))
        }
    report(rows, memory, args.size, args.repeats)
    one, two = scaling
    print(f"\ncache fill of {len(files['rle']) * 8} RLE images: 1 worker {one:.2f} s, 2 workers {two:.2f} s")
    print(f"  speed-up = {one / two:.2f}   (goal >= 1.7 on 2 cores; data.num_workers defaults to every CPU)")
    print("\nshare of the model input that is breast (mean over the images):")
    for shape, share in shares.items():
        print(f"  img_size={list(shape) if isinstance(shape, tuple) else shape}: {share:.2f}")


def breast_share(paths: list[Path], img_size) -> float:
    """Mean share of the preprocessed image's pixels that are breast: brighter than the
    background, with the threshold mammo's breast finder uses (``breast_region``)."""
    from mammo.data.images import Preprocessing, otsu_threshold

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

    from mammo.data.cache import ImageSource, fill_cache

    table = pd.DataFrame({"path": [str(p) for p in paths], "laterality": [""] * len(paths)})
    table = table.assign(AccessionNumber="", image_id=[f"img{i}" for i in range(len(paths))], sha256="")
    samples = type("Samples", (), {"table": table})()
    seconds = []
    for workers in (1, 2):
        start = time.perf_counter()
        fill_cache(
            ImageSource(table, pre),
            samples,
            "memory",
            workers,
            False,
        )
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def report(rows: dict, memory: dict, size: int, repeats: int) -> None:
    import torch

    print(
        f"\nat {size}x{size} (medians of {repeats} runs; one process, "
        f"{torch.get_num_threads()} torch threads):"
    )
    print(
        "  per codec, one thread: (a) mammo's decode + preprocess, (d) each decoder's decode alone,"
        "\n  (r) each library's resize of the decoded image, (f) = fastest d + fastest r"
    )
    for codec, (a, floors, resizes) in rows.items():
        decoders = ", ".join(
            f"{name} {t * 1e3:.0f} ms" for name, t in sorted(floors.items(), key=lambda x: x[1])
        )
        resized = ", ".join(
            f"{name} {t * 1e3:.0f} ms" for name, t in sorted(resizes.items(), key=lambda x: x[1])
        )
        decode, floor = min(floors.values()), min(floors.values()) + min(resizes.values())
        if codec == "jpeg2000":  # decoded at a reduced resolution: its goal is against the full decode
            ratio = f"a/d_fastest = {a / decode:.2f} (goal <= 0.2: reduced-resolution decode)"
        else:
            ratio = f"a/f = {a / floor:.2f} (goal <= 1.15)"
        print(f"  {codec:>13}: (a) {a * 1e3:7.1f} ms   (d) {decoders}")
        print(f"  {'':>13}  (r) {resized}   (f) {floor * 1e3:.1f} ms   {ratio}")
    grown, decode_only = memory["preprocess_kb"] / 1024, memory["decode_kb"] / 1024
    decoded = SHAPE[0] * SHAPE[1] * 2 / 2**20
    print(
        f"\npeak memory for one {SHAPE[0]}x{SHAPE[1]} 16-bit RLE image ({decoded:.0f} MiB decoded): "
        f"decode + preprocess +{grown:.0f} MiB RSS, pydicom decode alone +{decode_only:.0f} MiB"
    )


if __name__ == "__main__":
    main()
