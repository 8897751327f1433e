"""DICOM reading: modality LUT, windowing, MONOCHROME1, bad files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammo.core.errors import DataError
from mammo.data.demo import write_dicom
from mammo.data.images import check_header, read_image


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


def test_window_center_width_functions(tmp_path):
    from pydicom.pixels import apply_voi_lut

    stored = ramp()
    for function in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        path = write(
            tmp_path, stored, window=(2048.0, 1024.0), tags={"VOILUTFunction": function}, bits_stored=12
        )
        image = read_image(path, window="dicom")
        # pydicom's own windowing (output range 0..4095 for 12 bits), scaled to [0, 1]
        reference = apply_voi_lut(stored.astype(np.float64), pydicom.dcmread(path)) / 4095.0
        np.testing.assert_allclose(image, reference, atol=2e-3, err_msg=function)
    assert 0.0 < image[0, 0] < 0.01 and 0.99 < image[0, -1] < 1.0  # SIGMOID never clips


def test_voi_lut_sequence_wins_over_window(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    table = [int(v) for v in (np.sqrt(np.arange(4096) / 4095) * 4000)]  # uses 0..4000 of 16 bits
    item.add_new("LUTData", "US", table)
    stored = ramp()
    path = write(tmp_path, stored, window=(100.0, 10.0), tags={"VOILUTSequence": Sequence([item])})
    image = read_image(path, window="auto")
    np.testing.assert_allclose(image, np.sqrt(stored / 4095.0), atol=2e-3)
    percentile = read_image(path, window="percentile")  # the file's VOI ignored when asked
    assert abs(float(percentile[0, 32]) - 0.5) < 0.05


@pytest.mark.parametrize(
    ("bits_allocated", "bits_stored", "signed"),
    [(8, 8, False), (16, 12, False), (16, 14, False), (16, 16, False), (16, 12, True), (16, 16, True)],
)
def test_bit_depths_and_signed_pixels(tmp_path, bits_allocated, bits_stored, signed):
    low = -(2 ** (bits_stored - 1)) if signed else 0
    stored = np.tile(np.linspace(low, low + 2**bits_stored - 1, 64).round(), (16, 1))  # 16 rows at least
    path = write(
        tmp_path,
        stored.astype(f"{'i' if signed else 'u'}{bits_allocated // 8}"),
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=signed,
        rescale=(2.0, -7.0),
    )
    image = read_image(path, window="minmax")
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(image, expected, atol=1e-5)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_files_decode_like_uncompressed(tmp_path, syntax):
    import pydicom.uid

    stored = (np.random.default_rng(0).random((64, 48)) * 4095).astype(np.uint16)
    plain = read_image(write(tmp_path, stored, window=(2000.0, 3000.0)))
    path = write_dicom(
        tmp_path / "c.dcm",
        stored,
        patient_id="P1",
        accession="A1",
        window=(2000.0, 3000.0),
        transfer_syntax=getattr(pydicom.uid, syntax),
    )
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    np.testing.assert_array_equal(read_image(path), plain)


def test_header_check_catches_bad_files_without_decoding(tmp_path):
    path = write(tmp_path, ramp())
    assert check_header(path).Rows == 32
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-100])
    with pytest.raises(DataError, match="cut.dcm: truncated"):
        check_header(tmp_path / "cut.dcm")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DataError, match="nopixels.dcm: DICOM has no pixel data"):
        check_header(tmp_path / "nopixels.dcm")
    (tmp_path / "text.dcm").write_text("hello")
    with pytest.raises(DataError, match="text.dcm: not a readable DICOM file"):
        check_header(tmp_path / "text.dcm")
