"""The display (VOI) transform of a DICOM mammogram: stored values -> [0, 1], bright = dense tissue.

stored -> modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) -> VOI (VOI LUT
Sequence, else Window Center/Width with its VOI LUT Function, else a percentile window) ->
MONOCHROME1 inversion. It is an object of its own (:class:`Display`) so that the preprocessing can
apply it after downsampling, which keeps a 4000x3000 image cheap (see ``mammo.data.preprocess``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from mammo.core.errors import DataError

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
