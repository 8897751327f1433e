"""Read a DICOM mammogram into a float32 image in [0, 1] where bright means dense tissue.

Steps: stored values -> modality LUT (rescale slope/intercept) -> window (the file's
Window Center/Width, else a percentile window) -> MONOCHROME1 inversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from mammo.errors import DataError

WINDOWS = ("auto", "dicom", "percentile", "minmax")


def read_header(path: str | Path) -> pydicom.Dataset:
    """The DICOM header without pixel data (fast)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from exc


def read_image(path: str | Path, window: str = "auto") -> np.ndarray:
    """Pixel data of ``path`` as float32 [H, W] in [0, 1], MONOCHROME2 orientation.

    Args:
        path: DICOM file.
        window: ``auto`` uses the file's VOI window when it has one and a 0.5-99.5 percentile
            window otherwise; ``dicom`` requires the file's window; ``percentile`` and ``minmax``
            ignore it.
    """
    if window not in WINDOWS:
        raise DataError(f"data.window={window!r}: expected one of {', '.join(WINDOWS)}")
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise DataError(f"{path}: DICOM has no pixel data")
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float32, copy=False)
    except DataError:
        raise
    except Exception as exc:  # pydicom raises many types for corrupt/undecodable files
        raise DataError(f"{path}: cannot decode DICOM pixels ({type(exc).__name__}: {exc})") from exc
    if values.ndim != 2:
        raise DataError(f"{path}: expected one greyscale frame, got pixel array {values.shape}")
    low, high = _window_bounds(ds, values, window, path)
    image = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32, copy=False)


def _window_bounds(ds, values: np.ndarray, window: str, path) -> tuple[float, float]:
    if window in ("auto", "dicom") and "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(_first(ds.WindowCenter))
        width = float(_first(ds.WindowWidth))
        return center - width / 2.0, center + width / 2.0
    if window == "dicom":
        raise DataError(f"{path}: data.window=dicom but the file has no Window Center/Width")
    if window == "minmax":
        return float(values.min()), float(values.max())
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high)


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value
