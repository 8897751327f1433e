"""DICOM mammograms: header checks and pixel decoding (the display transform is ``mammo.data.display``).

Decoding goes through pydicom's pixel decoders, with the fastest installed plugin for each
compressed transfer syntax (:data:`DECODERS`, measured with ``scripts/bench_data.py``): RLE with
pylibjpeg-rle; JPEG 2000, JPEG-LS and JPEG Lossless with GDCM; any other syntax, or a missing
plugin, with pydicom's own choice.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from mammo.core.errors import DataError
from mammo.data.display import Display, sample_pixels

# Native (uncompressed) transfer syntaxes: their pixel data length is known from the header.
# what pydicom raises for a file that is missing, not DICOM, or has a broken header
_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError)
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
DECODERS = {
    RLELossless: "pylibjpeg",  # pylibjpeg-rle
    JPEG2000Lossless: "gdcm",
    JPEG2000: "gdcm",
    JPEGLSLossless: "gdcm",
    JPEGLSNearLossless: "gdcm",
    JPEGLosslessSV1: "gdcm",
    JPEGLossless: "gdcm",
}
"""Transfer syntax -> the pydicom decoding plugin mammo uses for it (README "Benchmarks")."""


def decoding_plugin(transfer_syntax) -> str:
    """The plugin of :data:`DECODERS` for ``transfer_syntax`` if it is installed, else ``""``
    (pydicom picks among those available)."""
    plugin = DECODERS.get(transfer_syntax, "")
    if plugin and plugin in get_decoder(transfer_syntax).available_plugins:
        return plugin
    return ""


def read_header(path: str | Path) -> pydicom.Dataset:
    """The DICOM header without pixel data (fast)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc


def check_header(path: str | Path) -> pydicom.Dataset:
    """Read the header and check, without decoding, that the file holds one greyscale image.

    Catches files that are not DICOM, lack pixel data, are multi-frame or colour, or whose
    pixel data is cut short (the file ends before the Pixel Data element does).
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, defer_size=256)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM has no pixel data")
    _check_greyscale(ds, path)
    raw = ds.get_item("PixelData", keep_deferred=True)
    value_tell = getattr(raw, "value_tell", None)
    if value_tell is not None and raw.length != 0xFFFFFFFF:
        if value_tell + raw.length > path.stat().st_size:
            raise DataError(f"{path}: truncated DICOM (pixel data runs past the end of the file)")
        tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
        if tsyntax in _NATIVE:
            expected = int(ds.Rows) * int(ds.Columns) * ((int(ds.BitsAllocated) + 7) // 8)
            if raw.length < expected:
                raise DataError(f"{path}: truncated pixel data ({raw.length} of {expected} bytes)")
    return ds


def decode(path: str | Path, min_size: int | None = None) -> tuple[pydicom.Dataset, np.ndarray]:
    """Read ``path`` and decode its pixels: (dataset, stored values [H, W]).

    With ``min_size``, a JPEG 2000 image may be decoded at a reduced resolution (the codestream's
    own wavelet levels, :func:`reduced_jpeg2000`) as long as its short side stays >= ``min_size``.
    """
    try:
        ds = pydicom.dcmread(path)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM has no pixel data")
    _check_greyscale(ds, path)
    reduced = reduced_jpeg2000(ds, min_size) if min_size else None
    if reduced is not None:
        return ds, reduced
    try:
        plugin = decoding_plugin(ds.file_meta.get("TransferSyntaxUID"))
        if plugin:
            ds.pixel_array_options(decoding_plugin=plugin)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt/undecodable data
        message = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot decode DICOM pixels ({type(exc).__name__}: {message})") from exc
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected one greyscale frame, got pixel array {pixels.shape}")
    return ds, pixels


def reduce_levels(rows: int, columns: int, min_size: int, most: int = 2) -> int:
    """How many halvings (at most ``most``) keep both sides >= ``min_size``. Beyond two levels
    the low-pass band drifts from an antialiased resize at the breast edge (tested up to two).

    >>> reduce_levels(4000, 3000, 512), reduce_levels(4000, 3000, 1024), reduce_levels(600, 400, 512)
    (2, 1, 0)
    >>> reduce_levels(4000, 3000, 128)
    2
    """
    levels = 0
    while levels < most and min(rows, columns) >> (levels + 1) >= min_size:
        levels += 1
    return levels


def reduced_jpeg2000(ds: pydicom.Dataset, min_size: int) -> np.ndarray | None:
    """Stored values of an unsigned JPEG 2000 image decoded at the lowest resolution level whose
    short side is still >= ``min_size`` (Pillow's OpenJPEG plugin, ``Image.reduce``); ``None``
    when that is the full resolution or the image is not one this applies to."""
    if ds.file_meta.get("TransferSyntaxUID") not in (JPEG2000Lossless, JPEG2000):
        return None
    if int(ds.get("PixelRepresentation", 0)) != 0 or int(ds.BitsAllocated) != 16:
        return None
    levels = reduce_levels(int(ds.Rows), int(ds.Columns), int(min_size))
    if levels == 0:
        return None
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    precision = codestream_precision(frame)
    if precision is None:
        return None
    image = Image.open(io.BytesIO(frame))
    image.reduce = levels  # decode only the wavelet levels needed
    pixels = np.asarray(image, dtype=np.uint16)
    return pixels >> (16 - precision)  # Pillow widens the codestream's precision to 16 bits


def codestream_precision(frame: bytes) -> int | None:
    """Bits per sample of a raw, unsigned, one-component JPEG 2000 codestream (its SIZ marker),
    or ``None`` for anything else (e.g. a JP2 file wrapper).

    >>> siz = b"\\xff\\x4f\\xff\\x51" + bytes(36) + b"\\x00\\x01" + bytes([13])
    >>> codestream_precision(siz), codestream_precision(b"\\x00" * 43)
    (14, None)
    """
    if len(frame) < 43 or frame[:4] != b"\xff\x4f\xff\x51" or frame[40:42] != b"\x00\x01":
        return None
    ssiz = frame[42]
    return None if ssiz & 0x80 else (ssiz & 0x7F) + 1


def _check_greyscale(ds: pydicom.Dataset, path) -> None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: invalid image header ({exc})") from exc
    if frames != 1 or samples != 1:
        raise DataError(
            f"{path}: expected one greyscale frame, got {frames} frame(s) x {samples} sample(s) per pixel"
        )


def read_image(path: str | Path, window: str = "auto", percentiles=(0.5, 99.5)) -> np.ndarray:
    """Full-resolution display image of ``path``: float32 [H, W] in [0, 1], bright = dense.

    >>> read_image("missing.dcm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mammo.core.errors.DataError: missing.dcm: not a readable DICOM file ([Errno 2] No such file ...)
    """
    ds, pixels = decode(path)
    display = Display.from_dataset(ds, sample_pixels(pixels), window, tuple(percentiles), path)
    return display(pixels)
