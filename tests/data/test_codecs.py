"""Codec coverage on the real DICOM files bundled with pydicom (read from its folder: offline)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo.core.errors import DataError
from mammo.data.images import read_image

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
# Transfer syntaxes mammography archives use; each must have a bundled greyscale file mammo loads.
REQUIRED = {
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
# pydicom bundles these only as colour images: pydicom decodes them, mammo refuses them (one
# greyscale frame expected). Greyscale JPEG baseline is covered by a file made below.
COLOUR_ONLY = {"1.2.840.10008.1.2.4.50": "JPEG Baseline", "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1"}


def bundled_images() -> list[Path]:
    out = []
    for path in sorted(TEST_FILES.rglob("*")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=64)
        except Exception:
            continue
        if "PixelData" in ds:
            out.append(path)
    return out


def pydicom_single_greyscale(path: Path) -> np.ndarray | None:
    """pydicom's own decode when the file is one greyscale frame, else None."""
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception:
        return None
    if pixels.ndim != 2 or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    return pixels


def _decodes(path: Path) -> bool:
    try:
        return pydicom.dcmread(path).pixel_array.size > 0
    except Exception:
        return False


def as_mammogram(path: Path, folder: Path) -> Path:
    """``path``, or a copy whose header says MG where it is a CT or MR file (refused as no
    mammogram by the acceptance rule every door shares), so that its codec is tested too."""
    from mammo.data.images import MODALITIES

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if str(ds.get("Modality", "") or "").strip().upper() in ("", *MODALITIES):
        return path
    ds = pydicom.dcmread(path)
    ds.Modality = "MG"
    ds.save_as(folder / path.name)
    return folder / path.name


def read_as_mammogram(path: Path, folder: Path) -> np.ndarray:
    copy = as_mammogram(path, folder)
    try:
        return read_image(copy)
    except DataError as exc:
        raise DataError(str(exc).replace(str(copy), str(path))) from None


def test_every_bundled_image_is_loaded_or_refused_clearly(tmp_path):
    files = bundled_images()
    assert len(files) > 80
    loaded, refused, decoded_colour = {}, [], set()
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = pydicom_single_greyscale(path)
            syntax = str(
                pydicom.dcmread(path, stop_before_pixels=True).file_meta.get("TransferSyntaxUID", "")
            )
            if syntax in COLOUR_ONLY and reference is None and _decodes(path):
                decoded_colour.add(syntax)
            try:
                image = read_as_mammogram(path, tmp_path)
            except DataError as exc:
                assert str(path) in str(exc) and "\n" not in str(exc)
                if "too small to be a mammogram" not in str(exc):  # else the acceptance rule's refusal
                    assert reference is None, f"pydicom decodes {path.name} but mammo refused it: {exc}"
                refused.append(path.name)
                continue
        assert reference is not None, f"{path.name}: mammo loaded what pydicom cannot"
        assert image.shape == reference.shape and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and np.isfinite(image).all()
        loaded.setdefault(syntax, []).append(path.name)
    missing = {uid: name for uid, name in REQUIRED.items() if uid not in loaded}
    assert not missing, f"no bundled file of {missing} loaded"
    assert set(COLOUR_ONLY) <= decoded_colour
    assert len(refused) < len(files) / 2


def test_greyscale_jpeg_baseline(tmp_path):
    """A greyscale JPEG baseline image (Pillow-encoded, encapsulated as DICOM) loads like the original."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from mammo.data.demo import write_dicom

    yy, xx = np.mgrid[0:64, 0:48]
    pixels = (xx * 5 + yy * 2).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    path = write_dicom(
        tmp_path / "j.dcm", pixels, patient_id="P", accession="A", bits_allocated=8, bits_stored=8
    )
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    image = read_image(path, window="minmax")
    np.testing.assert_allclose(image, (pixels - pixels.min()) / np.ptp(pixels), atol=0.03)


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "meta_missing_tsyntax.dcm"])
def test_broken_bundled_files_name_the_file(name):
    with pytest.raises(DataError, match=name):
        read_image(TEST_FILES / name)


def test_the_chosen_decoder_gives_the_pixels_every_other_plugin_gives(tmp_path):
    """mammo.data.images.DECODERS picks a plugin per syntax for speed; on every bundled greyscale
    image of those syntaxes it must agree exactly with each other installed plugin."""
    from pydicom.pixels import get_decoder

    from mammo.data.images import DECODERS, decode, decoding_plugin

    checked = set()
    for path in bundled_images():
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.get("TransferSyntaxUID")
        if syntax not in DECODERS or pydicom_single_greyscale(path) is None:
            continue
        try:
            _, ours = decode(as_mammogram(path, tmp_path))
        except DataError:
            continue  # refused clearly (covered above)
        for plugin in get_decoder(syntax).available_plugins:
            ds = pydicom.dcmread(path)
            ds.pixel_array_options(decoding_plugin=plugin)
            try:
                theirs = ds.pixel_array
            except Exception:  # a plugin that cannot decode this file at all
                continue
            assert np.array_equal(ours, theirs), f"{path.name}: {decoding_plugin(syntax)} vs {plugin}"
        checked.add(syntax)
    assert {s for s in DECODERS if decoding_plugin(s)} - checked <= {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless (process 14): pydicom bundles no greyscale file
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1: pydicom bundles only colour
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    }
