"""Mammography preprocessing: crop, labels, orientation, letterbox/stretch, settings key."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.core.errors import ConfigError
from mammo.data.demo import phantom, write_dicom
from mammo.data.images import Preprocessing, breast_region

H, W = 400, 300


def mammogram(chest_wall: str = "left", label: bool = True, edge: bool = True) -> np.ndarray:
    """Stored 12-bit values: a half-ellipse breast on the chest-wall edge (rows 100-300, 150 px
    deep), a burnt-in label inside the breast's box but apart from it, another in a far corner,
    and a bright detector edge line."""
    yy, xx = np.mgrid[0:H, 0:W]
    breast = ((yy - 200) / 100) ** 2 + (xx / 150) ** 2 < 1
    image = np.where(breast, 1500 + 1000 * (xx < 60), 40).astype(np.uint16)
    if label:
        image[102:112, 128:148] = 4000  # inside the box, outside the ellipse
        image[20:40, 220:280] = 4000  # far corner
    if edge:
        image[:, -2:] = 4095
    return image if chest_wall == "left" else image[:, ::-1].copy()


def write(tmp_path, stored, name="m.dcm", **kwargs):
    return write_dicom(tmp_path / name, stored, patient_id="P", accession="A", **kwargs)


def test_crop_finds_breast_and_blanks_labels(tmp_path):
    path = write(tmp_path, mammogram(), laterality="L")
    cropped = Preprocessing(100, crop=True, resize="stretch")(path)
    whole = Preprocessing(100, crop=False, resize="stretch")(path)
    # the crop keeps the breast (rows 100-300, columns 0-150 of 400x300) and fills the output
    assert (cropped > 0.2).mean() > 0.7 > (whole > 0.2).mean() * 2
    assert cropped[:, :5].mean() > 0.3  # chest wall kept at the left edge
    # the label inside the box is blanked: the top-right corner of the crop is background
    assert cropped[:6, -12:].max() < 0.05
    box, labels, _ = breast_region(whole)
    assert labels is not None and labels[:20].any()  # the far label is found as a separate region
    assert box[0] > 15 and box[1] - box[0] < 0.7 * whole.shape[0]  # rows of the breast only


@pytest.mark.parametrize(
    ("stored_side", "tags", "csv_laterality", "expect_flip"),
    [
        ("left", {"PatientOrientation": ["A", "R"]}, None, False),
        ("right", {"PatientOrientation": ["P", "L"]}, None, True),
        ("right", {"ImageLaterality": "R"}, None, True),
        ("left", {"ImageLaterality": "L"}, None, False),
        ("right", {"ImageLaterality": "L"}, "R", True),  # the CSV's laterality wins over the tag
        ("right", {}, None, True),  # no tags: the brighter half holds the chest wall
        ("left", {}, None, False),
    ],
)
def test_orientation(tmp_path, stored_side, tags, csv_laterality, expect_flip):
    stored = mammogram(stored_side, label=False, edge=False)
    path = write(tmp_path, stored, tags=tags)
    out = Preprocessing(64, crop=False, resize="stretch", orient="left")(path, laterality=csv_laterality)
    plain = Preprocessing(64, crop=False, resize="stretch", orient="none")(path)
    np.testing.assert_array_equal(out, plain[:, ::-1] if expect_flip else plain)
    if expect_flip or stored_side == "left":
        assert out[:, :32].mean() > out[:, 32:].mean()  # chest wall now on the left
    right = Preprocessing(64, crop=False, resize="stretch", orient="right")(path, laterality=csv_laterality)
    np.testing.assert_array_equal(right, out[:, ::-1])


@pytest.mark.parametrize(
    ("tags", "csv_laterality", "source"),
    [
        ({"PatientOrientation": ["A", "R"]}, None, "orientation"),
        ({"ImageLaterality": "L"}, None, "laterality"),
        ({}, "L", "laterality"),
        ({}, None, "brightness"),
    ],
)
def test_facts_say_what_decided_the_chest_wall(tmp_path, tags, csv_laterality, source):
    path = write(tmp_path, mammogram(label=False, edge=False), tags=tags)
    assert Preprocessing(64).preprocess(path, csv_laterality)[1].chest_wall_from == source


def test_facts_say_where_the_window_came_from_and_how_much_of_the_input_is_breast(tmp_path):
    windowed = write(tmp_path, mammogram(label=False, edge=False), "w.dcm", window=(1500.0, 3000.0))
    bare = write(tmp_path, mammogram(label=False, edge=False), "b.dcm")
    assert Preprocessing(48).preprocess(windowed)[1].window == "window"
    assert Preprocessing(48, window="minmax").preprocess(windowed)[1].window == "minmax"
    assert Preprocessing(48).preprocess(bare)[1].window == "percentile"  # auto fell back
    # the half-ellipse breast covers pi/4 of its 200x150 box: 0.785 * 30000 / 120000 of the file
    whole = Preprocessing(96, crop=False, resize="stretch").preprocess(bare)[1]
    assert whole.crop_share == 1.0 and whole.input_share == pytest.approx(np.pi / 4 / 4, abs=0.03)
    cropped = Preprocessing(96, crop=True, resize="stretch").preprocess(bare)[1]
    assert cropped.crop_share < 0.35 and cropped.input_share == pytest.approx(np.pi / 4, abs=0.1)
    # letterboxed into a square, the tall crop (about 216x153 of 400x300) leaves a quarter black
    boxed = Preprocessing(96, crop=True, resize="letterbox").preprocess(bare)[1]
    assert boxed.input_share == pytest.approx(cropped.input_share * 153 / 216, abs=0.06)


def test_letterbox_keeps_aspect_and_stretch_fills(tmp_path):
    path = write(tmp_path, mammogram(label=False, edge=False), laterality="L")
    boxed = Preprocessing(96, crop=False, resize="letterbox")(path)
    stretched = Preprocessing(96, crop=False, resize="stretch")(path)
    assert boxed.shape == stretched.shape == (96, 96)
    columns = np.flatnonzero(boxed.max(axis=0) > 0)
    assert columns[0] == 0 and columns[-1] + 1 == round(96 * W / H)  # 400x300 -> 96x72, at the chest wall
    assert (boxed[:, 72:] == 0).all()
    # the breast is 150 of 300 columns deep: 36 of 72 letterboxed, 48 of 96 stretched
    assert np.flatnonzero(boxed.max(axis=0) > 0.1)[-1] + 1 == pytest.approx(36, abs=2)
    assert np.flatnonzero(stretched.max(axis=0) > 0.1)[-1] + 1 == pytest.approx(48, abs=2)


def test_output_is_in_unit_range_for_each_window(tmp_path):
    path = write(tmp_path, mammogram(), window=(1500.0, 3000.0), laterality="L")
    for window in ("auto", "dicom", "percentile", "minmax"):
        image = Preprocessing(48, window=window)(path)
        assert image.dtype == np.float32 and image.shape == (48, 48)
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5


def test_settings_key_changes_with_every_setting():
    base = Preprocessing()
    variants = [
        Preprocessing(img_size=256),
        Preprocessing(window="percentile"),
        Preprocessing(percentiles=(1, 99)),
        Preprocessing(orient="right"),
        Preprocessing(crop=False),
        Preprocessing(resize="stretch"),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 1 + len(variants)
    assert Preprocessing(percentiles=[0.5, 99.5]).key() == base.key()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"orient": "up"}, "data.orient='up'"),
        ({"resize": "crop"}, "data.resize"),
        ({"percentiles": (5, 1)}, "percentiles"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Preprocessing(**kwargs)


def test_block_averaging_before_the_resize_matches_the_plain_resize(tmp_path):
    """data.box_reduce: a 2048x1536 mammogram at 256 px is averaged in 4x4 blocks before the
    antialiased resize. Stated tolerance against the plain resize, as for JPEG 2000 reduction:
    mean absolute difference <= 0.005 and at most 1 % of pixels off by more than 0.05."""
    from mammo.data.images import box_average

    rng = np.random.default_rng(0)
    stored = np.rint(phantom(2, "R", "CC", (2048, 1536), rng, noise=0.001) * 16383).astype(np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm", stored, patient_id="P", accession="A", laterality="R", bits_stored=14
    )
    plain, averaged = Preprocessing(256, box_reduce=False)(path), Preprocessing(256)(path)
    difference = np.abs(plain - averaged)
    assert 0 < difference.mean() <= 0.005 and (difference > 0.05).mean() <= 0.01
    assert Preprocessing(256).key() != Preprocessing(256, box_reduce=False).key()  # its own cache
    blocks = box_average(stored[:10, :9], 4)  # 2x2 whole blocks; the ragged edge is dropped
    assert blocks.dtype == np.float32 and blocks.shape == (2, 2)
    assert blocks[1, 0] == stored[4:8, 0:4].mean(dtype=np.float64)


def test_jpeg2000_at_reduced_resolution_matches_full_decode_and_resize(tmp_path):
    """data.j2k_reduce: a 2048x1536 JPEG 2000 mammogram at 256 px decodes two wavelet levels
    down (512x384). Stated tolerance against the full decode + antialiased resize: mean absolute
    difference <= 0.005 and at most 1 % of pixels off by more than 0.05 (display units, [0, 1]);
    the differences sit at the breast edge, where the low-pass band rings."""
    from pydicom.uid import JPEG2000Lossless

    from mammo.data.images import decode

    rng = np.random.default_rng(0)
    stored = np.rint(phantom(2, "R", "CC", (2048, 1536), rng, noise=0.001) * 16383).astype(np.uint16)
    path = write_dicom(
        tmp_path / "j2k.dcm",
        stored,
        patient_id="P",
        accession="A",
        laterality="R",
        bits_stored=14,
        transfer_syntax=JPEG2000Lossless,
    )
    assert decode(path, min_size=256)[1].shape == (512, 384)
    assert np.array_equal(decode(path)[1], stored)  # without min_size: the stored values, in full
    full, reduced = Preprocessing(256, j2k_reduce=False)(path), Preprocessing(256)(path)
    difference = np.abs(full - reduced)
    assert difference.mean() <= 0.005 and (difference > 0.05).mean() <= 0.01
    assert Preprocessing(256).key() != Preprocessing(256, j2k_reduce=False).key()  # its own cache


def film(frame: bool = True) -> np.ndarray:
    """A digitised film: a large breast on the left edge (rows 30-370) and, with ``frame``, the
    film's bright frame: 4-pixel lines along the top and bottom and down the chest-wall edge,
    where they meet the breast."""
    yy, xx = np.mgrid[0:H, 0:W]
    breast = ((yy - 200) / 170) ** 2 + (xx / 140) ** 2 < 1
    image = np.where(breast, 1800, 60).astype(np.uint16)
    if frame:
        image[8:12, :], image[H - 12 : H - 8, :], image[:, 6:10] = 3800, 3800, 3800
    return image


def test_the_crop_keeps_the_breast_and_not_a_films_frame(tmp_path):
    # on the display thumbnail the crop works on (a 400x300 image: every second pixel)
    framed, plain = (film(frame)[::2, ::2].astype(np.float32) / 4095 for frame in (True, False))
    box, unframed = breast_region(framed)[0], breast_region(plain)[0]
    assert max(abs(int(a) - int(b)) for a, b in zip(box, unframed)) <= 4  # the same box as unframed
    y0, y1, x0, x1 = box
    assert (y1 - y0) * (x1 - x0) < 0.6 * framed.size and x0 == 0  # against the chest wall
    image = Preprocessing((200, 100), crop=True)(write(tmp_path, film(), "f.dcm", laterality="L"))
    assert image[:2].max() < 0.3 and image[-2:].max() < 0.3  # no frame line along the top or bottom
    unframed_image = Preprocessing((200, 100), crop=True)(
        write(tmp_path, film(False), "p.dcm", laterality="L")
    )
    assert (image > 0.2).mean() > 0.9 * (unframed_image > 0.2).mean() > 0.45  # as much breast as without


def test_a_crop_that_keeps_nearly_the_whole_image_is_counted_and_named(dataset, make_datamodule, caplog):
    """An image whose breast the crop cannot separate from anything (here: bright edge to edge)
    is counted and named, when the cache is built and again when it is reused."""
    csv, root = dataset
    write_dicom(
        root / "ACC001" / "L_CC.dcm",
        np.full((48, 40), 3000, np.uint16),
        patient_id="PAT001",
        accession="ACC001",
    )
    for _ in range(2):  # built, then reused from the disk cache
        caplog.clear()
        stats = make_datamodule(csv, root, cache_mode="disk").cache_stats
        assert stats["nearly_whole_crops"] == 1 and stats["nearly_whole_crop_images"] == ["ACC001/L_CC"]
        assert "1 image(s) kept 95% or more of their area in the breast crop" in caplog.text
        assert "ACC001/L_CC" in caplog.text
    assert make_datamodule(csv, root, cache_mode="disk", crop=False).cache_stats["nearly_whole_crops"] == 0
