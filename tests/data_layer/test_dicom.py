"""DICOM reading: modality LUT, windowing, MONOCHROME1, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.data.demo import write_dicom
from mammo.data.dicom import read_image
from mammo.errors import DataError


def ramp(bits: int = 12) -> np.ndarray:
    top = 2**bits - 1
    return np.tile(np.linspace(0, top, 64).round().astype(np.uint16), (32, 1))


def write(tmp_path, stored, **kwargs):
    return write_dicom(tmp_path / "img.dcm", stored, patient_id="P1", accession="A1", **kwargs)


def test_minmax_window_maps_to_unit_range(tmp_path):
    image = read_image(write(tmp_path, ramp()), window="minmax")
    assert image.dtype == np.float32 and image.shape == (32, 64)
    assert image.min() == 0.0 and image.max() == 1.0
    assert np.all(np.diff(image[0]) >= 0)


def test_monochrome1_is_inverted(tmp_path):
    plain = read_image(write(tmp_path, ramp()), window="minmax")
    inverted = read_image(write(tmp_path, ramp(), photometric="MONOCHROME1"), window="minmax")
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


def test_dicom_window_is_applied_in_modality_units(tmp_path):
    stored = ramp()
    # intercept 1000: modality values are stored + 1000; window [1000, 1000 + 2047] covers the lower half
    path = write(tmp_path, stored, rescale=(1.0, 1000.0), window=(1000 + 1023.5, 2047.0))
    image = read_image(path, window="dicom")
    expected = np.clip(stored.astype(np.float32) / 2047.0, 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-3)
    assert (image[0, 40:] == 1.0).all()  # above the window: saturated


def test_window_dicom_requires_tags(tmp_path):
    with pytest.raises(DataError, match="no VOI LUT or Window Center/Width"):
        read_image(write(tmp_path, ramp()), window="dicom")


def test_auto_window_falls_back_to_percentiles(tmp_path):
    stored = ramp(16)
    stored[0, 0] = 65535  # one hot pixel must not squash the rest
    image = read_image(write(tmp_path, stored, bits_stored=16), window="auto")
    assert 0.45 < float(np.median(image)) < 0.55


def test_corrupt_and_pixelless_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(DataError, match="bad.dcm"):
        read_image(bad)
    path = write(tmp_path, ramp())
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 2000])
    with pytest.raises(DataError, match="truncated.dcm"):
        read_image(truncated)
