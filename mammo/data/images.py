"""One DICOM file -> the model's input: accept, decode, display window, breast crop, orient, resize.

**Acceptance.** One rule for which files are read, shared by every door (:func:`opened_image`).
**Decoding.** pydicom's decoders, with the fastest installed plugin per compressed transfer
syntax (:data:`DECODERS`, measured with ``scripts/bench_data.py``).
**The display transform** (:class:`Display`): stored -> modality LUT -> VOI (VOI LUT Sequence,
else Window Center/Width with its VOI LUT Function, else a percentile window) -> MONOCHROME1
inversion, to [0, 1] with bright = dense tissue.
**The pipeline** (:class:`Preprocessing`, each step switchable in ``conf/data``): on a ~256 px
thumbnail of the display image, find the breast (the largest bright region away from the
border; other bright regions are burnt-in labels, markers or a film's frame) and its chest-wall
side (Patient Orientation, else laterality, else intensity); crop the stored values to the
breast's box, downsample (antialiased: ``stretch`` or aspect-keeping ``letterbox``), and only
then window, blank the labels and flip the chest wall to ``orient``. Windowing after
downsampling touches ~0.3 Mpx instead of ~12 Mpx (a quarter of pydicom's decode time); for a
linear window it equals windowing first except in pixels averaged across the window's edges.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

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

from mammo.core.errors import ConfigError, DataError

# -- the display transform ----------------------------------------------------------------------------
WINDOWS = ("auto", "dicom", "percentile", "minmax")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass
class Display:
    """The stored-value -> [0, 1] display transform of one image.

    Build it with :meth:`from_dataset`; call it on stored values (any float array, e.g. a
    downsampled image). ``kind`` is ``lut`` (VOI LUT Sequence), ``window`` (Window Center/Width
    with ``function``) or ``range`` (a percentile/min-max window in modality units).
    """

    kind: str
    slope: float = 1.0
    intercept: float = 0.0
    low: float = 0.0
    high: float = 1.0
    center: float = 0.0
    width: float = 1.0
    function: str = "LINEAR"
    invert: bool = False
    ds: pydicom.Dataset | None = None  # kept for LUT lookups

    @classmethod
    def from_dataset(
        cls,
        ds: pydicom.Dataset,
        sample: np.ndarray,
        window: str = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        path: str | Path = "",
    ) -> Display:
        """Choose the VOI transform for ``ds``.

        Args:
            ds: the image's dataset.
            sample: stored values to take percentiles from (a strided view of the image is enough).
            window: ``auto`` uses the file's VOI LUT Sequence, else its Window Center/Width, else
                percentiles; ``dicom`` requires one of the first two; ``percentile`` and ``minmax``
                ignore the file's VOI.
            percentiles: the low/high percentiles of the percentile window.
            path: named in errors.
        """
        if window not in WINDOWS:
            raise DataError(f"data.window={window!r}: expected one of {', '.join(WINDOWS)}")
        try:
            return cls._choose(ds, sample, window, percentiles, path)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise DataError(f"{path}: invalid VOI/rescale header ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _choose(cls, ds, sample, window, percentiles, path) -> Display:
        common = {
            "slope": float(ds.get("RescaleSlope", 1.0) or 1.0),
            "intercept": float(ds.get("RescaleIntercept", 0.0) or 0.0),
            "invert": ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1",
            "ds": ds,
        }
        if window in ("auto", "dicom"):
            if ds.get("VOILUTSequence"):
                return cls(kind="lut", **common)
            if "WindowCenter" in ds and "WindowWidth" in ds:
                function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
                if function not in VOI_FUNCTIONS:
                    raise DataError(f"{path}: unsupported VOI LUT Function {function!r}")
                width = float(_first(ds.WindowWidth))
                if width <= 0:
                    raise DataError(f"{path}: Window Width must be positive, got {width}")
                return cls(
                    kind="window",
                    center=float(_first(ds.WindowCenter)),
                    width=width,
                    function=function,
                    **common,
                )
            if window == "dicom":
                raise DataError(
                    f"{path}: data.window=dicom but the file has no VOI LUT or Window Center/Width"
                )
        display = cls(kind="range", **common)
        values = display.modality(sample.astype(np.float32, copy=False))
        if window == "minmax":
            low, high = float(values.min()), float(values.max())
        else:
            low, high = _percentiles(values, percentiles)
        display.low, display.high = low, high
        return display

    def modality(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> modality units (Rescale Slope/Intercept or Modality LUT Sequence)."""
        if self.ds is not None and self.ds.get("ModalityLUTSequence"):
            from pydicom.pixels import apply_modality_lut

            return apply_modality_lut(np.rint(stored).astype(np.int32), self.ds).astype(np.float32)
        if self.slope == 1.0 and self.intercept == 0.0:
            return stored
        return stored * np.float32(self.slope) + np.float32(self.intercept)

    def __call__(self, stored: np.ndarray) -> np.ndarray:
        """Stored values (float array) -> display values in [0, 1] (float32)."""
        x = self.modality(np.asarray(stored, dtype=np.float32))
        if self.kind == "lut":
            y = _voi_lut(x, self.ds)
        elif self.kind == "window":
            y = _window(x, self.center, self.width, self.function)
        else:
            y = (x - self.low) / max(self.high - self.low, 1e-6)
        y = np.clip(y, 0.0, 1.0, out=np.asarray(y, dtype=np.float32))
        if self.invert:
            y = np.subtract(1.0, y, out=y)
        return y


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2/3 window functions, scaled to an output range of [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return (x - center) / width + 0.5
    if width <= 1:  # LINEAR with width 1 is a threshold at center - 0.5
        return (x > center - 0.5).astype(np.float32)
    return (x - (center - 0.5)) / (width - 1.0) + 0.5


def _voi_lut(x: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The first VOI LUT Sequence item, normalised by the range of its own output values
    (robust to LUT Descriptors that state more bits than the table uses)."""
    from pydicom.pixels import apply_voi

    out = apply_voi(np.rint(x).astype(np.int32), ds).astype(np.float32)
    item = ds.VOILUTSequence[0]
    table = apply_voi(np.arange(item.LUTDescriptor[1], item.LUTDescriptor[1] + _lut_len(item)), ds)
    low, high = float(table.min()), float(table.max())
    return (out - low) / max(high - low, 1e-6)


def _lut_len(item) -> int:
    return int(item.LUTDescriptor[0]) or 2**16


def sample_pixels(pixels: np.ndarray, max_pixels: int = 500_000) -> np.ndarray:
    """A strided view with at most about ``max_pixels`` values (percentiles of a 12 Mpx image
    from 0.5 Mpx agree to well under a grey level and cost 10x less)."""
    step = max(1, int(np.ceil(np.sqrt(pixels.size / max_pixels))))
    return pixels[::step, ::step]


def _percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Nearest-rank percentiles from one partition pass (np.percentile makes one per value)."""
    flat = np.ravel(values)
    ranks = [min(flat.size - 1, max(0, round(p / 100.0 * (flat.size - 1)))) for p in percentiles]
    part = np.partition(flat, ranks)
    return float(part[ranks[0]]), float(part[ranks[1]])


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


# -- decoding -----------------------------------------------------------------------------------------
_READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError)  # a bad header
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}  # pixel length in header
DECODERS = {
    RLELossless: "pylibjpeg",  # pylibjpeg-rle
    JPEG2000Lossless: "gdcm",
    JPEG2000: "gdcm",
    JPEGLSLossless: "gdcm",
    JPEGLSNearLossless: "gdcm",
    JPEGLosslessSV1: "gdcm",
    JPEGLossless: "gdcm",
}
"""Transfer syntax -> the pydicom decoding plugin mammo uses for it (docs/design/benchmarks.md)."""


def decoding_plugin(transfer_syntax) -> str:
    """The plugin of :data:`DECODERS` for ``transfer_syntax`` if it is installed, else ``""``
    (pydicom picks among those available)."""
    plugin = DECODERS.get(transfer_syntax, "")
    if plugin and plugin in get_decoder(transfer_syntax).available_plugins:
        return plugin
    return ""


def read_header(path: str | Path) -> pydicom.Dataset:
    """The DICOM header without pixel data (fast), of a file :func:`opened_image` accepts."""
    return opened_image(path, defer_size=256)


def check_header(path: str | Path) -> pydicom.Dataset:
    """Read the header and check, without decoding, that the file holds one greyscale image
    that may be a mammogram (:func:`opened_image`), and that its pixel data is not cut short."""
    path = Path(path)
    ds = opened_image(path, defer_size=256)
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


def opened_image(path: str | Path, **options) -> pydicom.Dataset:
    """The file acceptance rule every door shares (training, evaluate, predict, embed, the
    review): a readable DICOM with pixel data, one greyscale frame, and a header that may be a
    mammogram (:func:`not_a_mammogram`); else a :class:`DataError` naming the file and why."""
    try:
        ds = pydicom.dcmread(path, **options)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM has no pixel data")
    _check_greyscale(ds, path)
    problem = not_a_mammogram({key: str(ds.get(key, "") or "") for key in ("Modality", "Rows", "Columns")})
    if problem:
        raise DataError(f"{path}: {problem}")
    return ds


MODALITIES = ("MG", "CR", "DX", "OT")  # mammography, CR and DX (some units, film digitisers), other
MIN_SIDE = 16  # fewer pixels on a side cannot hold a breast (Columns=1: an all-black letterbox)


def not_a_mammogram(facts: dict) -> str:
    """Why a file's header facts say it is no mammogram (``""`` when nothing does).

    >>> not_a_mammogram({"Modality": "CT", "Rows": "512", "Columns": "512"})
    'Modality CT is not a mammogram (accepted: MG, CR, DX, OT)'
    >>> not_a_mammogram({"Modality": "MG", "Rows": "3328", "Columns": "1"})
    'the image is 3328 x 1 pixels, too small to be a mammogram (at least 16 on each side)'
    """
    modality = facts.get("Modality", "").strip().upper()
    if modality and modality not in MODALITIES:
        return f"Modality {modality} is not a mammogram (accepted: {', '.join(MODALITIES)})"
    rows, columns = facts.get("Rows", ""), facts.get("Columns", "")
    if rows.isdigit() and columns.isdigit() and min(int(rows), int(columns)) < MIN_SIDE:
        size = f"{rows} x {columns} pixels"
        return f"the image is {size}, too small to be a mammogram (at least {MIN_SIDE} on each side)"
    return ""


def decode(path: str | Path, min_size: int | None = None) -> tuple[pydicom.Dataset, np.ndarray]:
    """Read ``path`` and decode its pixels: (dataset, stored values [H, W]).

    With ``min_size``, a JPEG 2000 image may be decoded at a reduced resolution (the codestream's
    own wavelet levels, :func:`reduced_jpeg2000`) as long as its short side stays >= ``min_size``.
    """
    ds = opened_image(path)
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


# -- the breast ---------------------------------------------------------------------------------------
log = logging.getLogger("mammo")

NEARLY_WHOLE = 0.95
"""A breast crop that keeps this share of the image or more found nothing to leave out."""


CHEST_WALL_SOURCES = ("orientation", "laterality", "brightness")
"""What decided an image's chest-wall side, in the order :func:`chest_wall_side` tries them."""


class Region(NamedTuple):
    """The breast found on a display thumbnail."""

    box: tuple[int, int, int, int]
    """``(y0, y1, x0, x1)``: the breast with its margin (the whole thumbnail when none is found)."""
    labels: np.ndarray | None
    """The other bright regions inside the box (labels, markers), or ``None`` when there are none."""
    breast: np.ndarray | None
    """The breast's mask on the thumbnail, ``None`` when no region stands out."""

    def breast_share_of_box(self) -> float:
        """The share of the box the breast covers (1.0 when no breast was found)."""
        if self.breast is None:
            return 1.0
        y0, y1, x0, x1 = self.box
        return float(self.breast[y0:y1, x0:x1].mean()) if y1 > y0 and x1 > x0 else 0.0


def breast_region(thumb: np.ndarray, pad: float = 0.02) -> Region:
    """The breast on a display thumbnail (:class:`Region`): its box, the other bright regions
    (labels, markers) inside the box, and its mask.

    The breast is the largest connected region brighter than the background (10 % of the way
    from the 2nd to the 98th percentile, capped at Otsu's threshold so that a dark image still
    separates), ignoring a 1 % border where detector edges often glow, and apart from thin bright
    lines (:func:`largest_region`: a digitised film's frame), which are blanked like labels. The
    box gets ``pad`` of margin and reaches the image edge when the breast does (the chest wall).
    """
    from scipy import ndimage

    h, w = thumb.shape
    low, high = np.percentile(thumb, [2.0, 98.0])
    mask = thumb > min(low + 0.1 * (high - low), otsu_threshold(thumb))
    margin = max(1, round(0.01 * min(h, w)))
    mask[:margin], mask[-margin:], mask[:, :margin], mask[:, -margin:] = False, False, False, False
    breast = largest_region(mask, thin_line_width(h, w))
    if breast is None:
        return Region((0, h, 0, w), None, None)
    rows, cols = np.flatnonzero(breast.any(axis=1)), np.flatnonzero(breast.any(axis=0))
    py, px = round(pad * h), round(pad * w)
    y0, y1 = max(0, rows[0] - py), min(h, rows[-1] + 1 + py)
    x0, x1 = max(0, cols[0] - px), min(w, cols[-1] + 1 + px)
    y0, x0 = (0 if y0 <= margin + 1 else y0), (0 if x0 <= margin + 1 else x0)
    y1, x1 = (h if y1 >= h - margin - 1 else y1), (w if x1 >= w - margin - 1 else x1)
    others = mask & ~breast
    if not others[y0:y1, x0:x1].any():
        return Region((y0, y1, x0, x1), None, breast)
    return Region((y0, y1, x0, x1), ndimage.binary_dilation(others, iterations=2) & ~breast, breast)


def thin_line_width(height: int, width: int) -> int:
    """Bright structures narrower than this many thumbnail pixels are lines, not breast tissue
    (2.5 % of the short side, at least 3): a digitised film's frame, a detector edge."""
    return max(3, round(0.025 * min(height, width)))


def largest_region(mask: np.ndarray, line_width: int) -> np.ndarray | None:
    """The largest connected region of ``mask`` once thin lines are shed (a morphological opening
    with a ``line_width`` square), grown back over the skin line the opening shaved; ``None`` if
    ``mask`` is empty. A film's bright frame, joined to the breast at the chest-wall edge, would
    otherwise make the whole image one region. Without the opening when nothing survives it (a
    tiny image)."""
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, structure=np.ones((line_width, line_width), bool))
    core = opened if opened.any() else mask
    components, n = ndimage.label(core)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(core, components, index=np.arange(1, n + 1))
    largest = components == int(np.argmax(sizes)) + 1
    if core is mask:
        return largest
    return ndimage.binary_dilation(largest, iterations=line_width) & mask


def otsu_threshold(image: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance)."""
    hist, edges = np.histogram(image, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def chest_wall_side(ds, laterality: str | None, thumb: np.ndarray) -> tuple[str, str]:
    """``left`` or ``right`` (the image edge the chest wall is on), and what decided it (one of
    :data:`CHEST_WALL_SOURCES`).

    In order: the DICOM Patient Orientation (the row direction points anterior, towards the
    nipple, when the chest wall is on the left); the laterality (CSV, Image Laterality or
    Laterality; the standard hanging puts a left breast's chest wall on the left); the brighter
    image half, a guess worth a look.
    """
    orientation = ds.get("PatientOrientation")
    if orientation and len(orientation) >= 1 and str(orientation[0])[:1] in ("A", "P"):
        return ("left" if str(orientation[0]).startswith("A") else "right"), "orientation"
    side = laterality or ds.get("ImageLaterality") or ds.get("Laterality")
    if str(side).strip().upper() in ("L", "R"):
        return ("left" if str(side).strip().upper() == "L" else "right"), "laterality"
    half = thumb.shape[1] // 2
    return ("left" if thumb[:, :half].sum() >= thumb[:, -half:].sum() else "right"), "brightness"


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1).astype(int)
    return mask[np.ix_(rows, cols)]


def report_nearly_whole_crops(image_ids: list[str], facts: dict, cropped: bool, listed: int = 100) -> dict:
    """A ``WARNING:`` naming the images whose breast crop kept nearly the whole image (a film's
    frame or a border it could not separate from the breast: worth a look), and the cache
    statistics' ``nearly_whole_crops`` (count) and ``nearly_whole_crop_images`` (the first
    ``listed``). ``facts`` maps an image's position to how it was made
    (:class:`~mammo.data.images.Facts`; ``None``: a bad file); nothing is counted without the
    crop (``cropped`` false)."""
    whole = [
        image_ids[i]
        for i, made in sorted(facts.items())
        if cropped and made is not None and made.crop_share >= NEARLY_WHOLE
    ]
    if whole:
        log.warning(
            "%d image(s) kept %d%% or more of their area in the breast crop (a frame or border joined to "
            "the breast?); look at them: %s%s",
            len(whole),
            round(NEARLY_WHOLE * 100),
            ", ".join(whole[:10]),
            " ..." if len(whole) > 10 else "",
        )
    return {"nearly_whole_crops": len(whole), "nearly_whole_crop_images": whole[:listed]}


# -- the pipeline -------------------------------------------------------------------------------------
ImageSize = int | tuple[int, int]

# Bump when the pipeline's output changes for the same settings, so disk caches rebuild.
PIPELINE_VERSION = 3  # 2: the crop sheds thin lines (a film's frame); 3: entries record their Facts
ORIENTS = ("left", "right", "none")
RESIZES = ("letterbox", "stretch")
THUMB_SIZE = 256


WINDOW_SOURCES = ("lut", "window", "percentile", "minmax")
"""Where an image's display window came from: the file's VOI LUT, its Window Center/Width, the
percentiles of its values, or their range."""


@dataclass(frozen=True)
class Facts:
    """How one model input was made, in numbers a data check can rank: what the disk cache
    records beside each image (:mod:`mammo.data.cache`) and the review's data checks show."""

    crop_share: float = 1.0
    """The share of the file's area the breast crop kept (1.0 without the crop)."""
    input_share: float = 1.0
    """The share of the model input the breast covers (the rest is background or letterbox)."""
    chest_wall_from: str = "orientation"
    """What decided the chest-wall side (:data:`~mammo.data.images.CHEST_WALL_SOURCES`)."""
    window: str = "window"
    """Where the display window came from (:data:`WINDOW_SOURCES`)."""


@dataclass(frozen=True)
class Prepared:
    """One file's model input and how it was made: what a review shows beside it."""

    image: np.ndarray
    """The model input, float32 [height, width] in [0, 1]."""
    facts: Facts
    """How it was made (crop and breast shares, chest-wall and window sources)."""
    box: tuple[int, int, int, int]
    """The crop box ``(y0, y1, x0, x1)`` on :attr:`thumb`."""
    thumb: np.ndarray
    """The whole file, displayed (windowed) and downscaled to about 256 px, as the file stores it."""
    chest_wall: str
    """The file's chest-wall side, ``left`` or ``right``."""
    flipped: bool
    """Whether the model input is the file mirrored (to put the chest wall on ``orient``'s side)."""
    manufacturer: str = ""
    """The file's scanner (DICOM Manufacturer and ManufacturerModelName)."""


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing settings; calling it preprocesses one file.

    Args:
        img_size: the output size in pixels: ``n`` for ``n x n``, or ``(height, width)`` (e.g.
            ``(1024, 512)``: a mammogram is about twice as tall as wide after the breast crop).
            A square pair is stored as its integer, so both name the same cache entries.
        window: ``auto`` | ``dicom`` | ``percentile`` | ``minmax`` (see ``Display.from_dataset``).
        percentiles: low/high percentiles of the percentile window.
        orient: put the chest wall on the ``left`` or ``right`` image edge; ``none`` keeps the file's.
        crop: crop to the breast and blank burnt-in labels.
        resize: ``letterbox`` keeps the aspect ratio and pads with background; ``stretch`` does not.
        j2k_reduce: decode a JPEG 2000 image at a reduced resolution level (up to 4x smaller per
            side) when its short side stays >= ``img_size``: the antialiased resize then starts
            from fewer pixels (``mammo.data.images.reduced_jpeg2000``); about 10-25x faster at
            4000x3000 -> 512, within the tolerance ``tests/data/test_preprocess.py`` states.
        box_reduce: before the antialiased resize, average blocks of 2x2 or 4x4 stored values
            while the cropped image stays >= the output size (:func:`box_average`): the resize
            then reads a quarter or a sixteenth of the pixels (4000x3000 -> 512: 22 ms -> 6 ms,
            one thread), within the same stated tolerance.
    """

    img_size: ImageSize = 512
    window: str = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    orient: str = "left"
    crop: bool = True
    resize: str = "letterbox"
    j2k_reduce: bool = True
    box_reduce: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", normal_img_size(self.img_size))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        if self.orient not in ORIENTS:
            raise ConfigError(f"data.orient={self.orient!r}: expected one of {', '.join(ORIENTS)}")
        if self.resize not in RESIZES:
            raise ConfigError(f"data.resize={self.resize!r}: expected one of {', '.join(RESIZES)}")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ConfigError(f"data.percentiles={list(self.percentiles)}: expected 0 <= low < high <= 100")
        if min(self.shape) < 8:
            raise ConfigError(f"img_size={self.settings()['img_size']}: expected at least 8 pixels")

    @property
    def shape(self) -> tuple[int, int]:
        """The output's ``(height, width)``."""
        return image_shape(self.img_size)

    def settings(self) -> dict:
        """Everything that determines the output, as stored in the cache and the checkpoint."""
        size = self.img_size if isinstance(self.img_size, int) else list(self.img_size)
        return {
            **asdict(self),
            "img_size": size,
            "percentiles": list(self.percentiles),
            "pipeline_version": PIPELINE_VERSION,
        }

    def key(self) -> str:
        """A short hash of :meth:`settings`: the disk cache's folder for these settings."""
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def __call__(self, path: str | Path, laterality: str | None = None) -> np.ndarray:
        """Preprocess one DICOM file -> float32 [height, width] (:attr:`shape`) in [0, 1].

        Args:
            path: the DICOM file.
            laterality: ``L``/``R`` from the label CSV; overrides the file's laterality tags.
        """
        return self.preprocess(path, laterality)[0]

    def preprocess(self, path: str | Path, laterality: str | None = None) -> tuple[np.ndarray, Facts]:
        """What calling does, and how the image was made (:class:`Facts`): a crop share near 1
        means the crop found nothing to leave out (a film's frame, a border it could not separate
        from the breast)."""
        prepared = self.prepare(path, laterality)
        return prepared.image, prepared.facts

    def prepare(self, path: str | Path, laterality: str | None = None) -> Prepared:
        """The model input and how it was made from the file (:class:`Prepared`)."""
        ds, pixels = decode(path, min_size=max(self.shape) if self.j2k_reduce else None)
        display = Display.from_dataset(ds, sample_pixels(pixels), self.window, self.percentiles, path)
        step = max(1, -(-max(pixels.shape) // THUMB_SIZE))
        thumb = display(pixels[::step, ::step])
        found = breast_region(thumb)
        if not self.crop:
            found = Region((0, thumb.shape[0], 0, thumb.shape[1]), None, found.breast)
        box, labels = found.box, found.labels
        y0, y1, x0, x1 = (
            min(v * step, n) for v, n in zip(box, (pixels.shape[0],) * 2 + (pixels.shape[1],) * 2)
        )
        region = pixels[y0:y1, x0:x1]
        out_h, out_w = self._output_shape(region.shape)
        if self.box_reduce:
            region = box_average(region, box_factor(region.shape, (out_h, out_w)))
        image = display(downsample(region, out_h, out_w))
        if labels is not None:
            image[resize_nearest(labels[box[0] : box[1], box[2] : box[3]], out_h, out_w)] = 0.0
        chest_wall, chest_wall_from = chest_wall_side(ds, laterality, thumb)
        flip = self.orient != "none" and chest_wall != self.orient
        if flip:
            image = image[:, ::-1]
        facts = Facts(
            crop_share=(y1 - y0) * (x1 - x0) / (pixels.shape[0] * pixels.shape[1]),
            input_share=found.breast_share_of_box() * out_h * out_w / (self.shape[0] * self.shape[1]),
            chest_wall_from=chest_wall_from,
            window=self._window_source(display),
        )
        scanner = " ".join(
            str(ds.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")
        ).strip()
        return Prepared(self._pad(image), facts, tuple(box), thumb, chest_wall, flip, scanner)

    def _window_source(self, display: Display) -> str:
        if display.kind != "range":
            return display.kind
        return "minmax" if self.window == "minmax" else "percentile"

    def _output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        height, width = self.shape
        if self.resize == "stretch":
            return height, width
        scale = min(height / shape[0], width / shape[1])
        return max(1, min(height, round(shape[0] * scale))), max(1, min(width, round(shape[1] * scale)))

    def _pad(self, image: np.ndarray) -> np.ndarray:
        """Letterbox: centred vertically, against the chest-wall edge horizontally."""
        height, width = self.shape
        out = np.zeros((height, width), dtype=np.float32)
        h, w = image.shape
        top = (height - h) // 2
        left = {"left": 0, "right": width - w}.get(self.orient, (width - w) // 2)
        out[top : top + h, left : left + w] = image
        return out


def normal_img_size(value) -> ImageSize:
    """``img_size`` as stored: an integer for a square (``512``, ``[512, 512]``), else ``(H, W)``.

    Raises:
        ConfigError: ``value`` is neither an integer nor a pair of integers.
    """
    if _is_integer(value):
        return int(value)
    pair = None if isinstance(value, str) or not hasattr(value, "__len__") else list(value)
    if pair is None or len(pair) != 2 or not all(map(_is_integer, pair)):
        raise ConfigError(f"img_size={value}: expected an integer or [height, width] of integers")
    height, width = (int(v) for v in pair)
    return height if height == width else (height, width)


def _is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def image_shape(img_size) -> tuple[int, int]:
    """``(height, width)`` of an ``img_size`` (an integer ``n`` is ``n x n``)."""
    size = normal_img_size(img_size)
    return (size, size) if isinstance(size, int) else size


def downsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of a 2-D array (any numeric dtype) -> float32."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    if x.shape[-2:] == (height, width):
        return x[0, 0].numpy()
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)[0, 0].numpy()


def box_factor(shape: tuple[int, int], output: tuple[int, int], largest: int = 4) -> int:
    """The largest power of two up to ``largest`` that keeps ``shape`` divided by it >= ``output``.

    >>> box_factor((3500, 2500), (512, 366)), box_factor((900, 700), (512, 366))
    (4, 1)
    >>> box_factor((2000, 1500), (512, 366)), box_factor((10, 10), (9, 9))
    (2, 1)
    """
    factor = 1
    while factor < largest and all(n // (2 * factor) >= m for n, m in zip(shape, output)):
        factor *= 2
    return factor


def box_average(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor x factor`` blocks of a 2-D array -> float32 (``values`` itself when
    ``factor`` is 1); the last rows and columns that do not fill a block are dropped.

    Rows first, in strided adds (NumPy reads each stored value once), then columns on the result,
    which is already ``factor`` times smaller. float32 holds the sums of 16 16-bit values exactly.
    """
    if factor == 1:
        return values
    height, width = (n // factor * factor for n in values.shape)
    values = values[:height, :width]
    rows = values[0::factor].astype(np.float32)
    for k in range(1, factor):
        rows += values[k::factor]
    out = rows[:, 0::factor].copy()
    for k in range(1, factor):
        out += rows[:, k::factor]
    out *= np.float32(1.0 / factor**2)
    return out
