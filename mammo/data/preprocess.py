"""Mammography preprocessing: DICOM -> a fixed-size [0, 1] image, oriented and cropped.

Pipeline for one file (each step switchable in ``conf/data``):

1. decode the stored values (pydicom) and choose the display transform (``mammo.data.dicom``);
2. on a ~256 px thumbnail of the display image: find the breast (the largest bright connected
   region away from the image border; other bright regions are burnt-in labels or markers) and
   which side its chest wall is on (DICOM Patient Orientation, else laterality, else intensity);
3. crop the stored values to the breast's box, downsample them to the output size (antialiased
   bilinear: plain ``stretch`` or aspect-keeping ``letterbox``), and only then apply the display
   transform, blank the labels and flip the chest wall to ``orient``.

Windowing after downsampling touches ~0.3 Mpx instead of ~12 Mpx, which is what keeps a
4000x3000 image within a quarter of pydicom's decode time (``scripts/bench_data.py``). For a
linear window it equals windowing first except in pixels averaged across the window's edges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mammo.core.errors import ConfigError
from mammo.data.breast import Region, breast_region, chest_wall_side, resize_nearest
from mammo.data.dicom import decode
from mammo.data.display import Display, sample_pixels

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
    """What decided the chest-wall side (:data:`~mammo.data.breast.CHEST_WALL_SOURCES`)."""
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
            from fewer pixels (``mammo.data.dicom.reduced_jpeg2000``); about 10-25x faster at
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
