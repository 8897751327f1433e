"""Every kind of bad input: a one-line error naming the file/row, or skip-and-count with on_bad_file=skip."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from mammo.core.errors import DataError


def corrupt_file(csv, root):
    path = root / "ACC001" / "L_CC.dcm"
    path.write_bytes(b"\x00" * 50)
    return path.name


def truncated_file(csv, root):
    path = root / "ACC001" / "L_CC.dcm"
    path.write_bytes(path.read_bytes()[:-500])
    return "L_CC.dcm: truncated"


def no_pixel_data(csv, root):
    path = root / "ACC001" / "L_CC.dcm"
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return "L_CC.dcm: DICOM has no pixel data"


def undecodable_pixels(csv, root):
    """A valid header over compressed data that cannot be decoded: found when preparing the cache."""
    path = root / "ACC001" / "L_CC.dcm"
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless, encoding_plugin="")
    data = bytearray(ds.PixelData)
    data[16:24] = (7).to_bytes(4, "little") + (0xFFFFFF).to_bytes(
        4, "little"
    )  # RLE header: 7 segments, bad offset
    ds.PixelData = bytes(data)
    ds.save_as(path)
    return "L_CC.dcm: cannot decode DICOM pixels"


def missing_folder(csv, root):
    (root / "ACC001" / "L_CC.dcm").unlink()
    (root / "ACC001" / "R_CC.dcm").unlink()
    (root / "ACC001").rmdir()
    return "accession folder missing for AccessionNumber=ACC001 (row 3)"


def empty_folder(csv, root):
    for path in (root / "ACC001").iterdir():
        path.unlink()
    return "accession folder is empty (AccessionNumber=ACC001, row 3)"


def unknown_label(csv, root):
    csv.write_text(csv.read_text().replace("ACC001,B,", "ACC001,X,"))
    return "row 3 (AccessionNumber=ACC001): unknown Classification 'X'"


def one_pixel_wide(csv, root):
    """A header that says ``Columns=1``: letterboxed, it would be an all-black model input."""
    from mammo.data.demo import write_dicom

    path = root / "ACC001" / "L_CC.dcm"
    write_dicom(path, np.full((48, 1), 900, np.uint16), patient_id="PAT001", accession="ACC001")
    return "L_CC.dcm: the image is 48 x 1 pixels, too small to be a mammogram"


def ct_slice(csv, root):
    """A CT slice dropped into a mammography folder."""
    path = root / "ACC001" / "L_CC.dcm"
    ds = pydicom.dcmread(path)
    ds.Modality = "CT"
    ds.save_as(path)
    return "L_CC.dcm: Modality CT is not a mammogram (accepted: MG, CR, DX, OT)"


def non_utf8_name(csv, root):
    """A file name whose bytes are not UTF-8 (Latin-1 from an old archive)."""
    os.rename(root / "ACC001" / "L_CC.dcm", os.fsencode(root / "ACC001") + b"/L_CC_caf\xe9.dcm")
    return "ACC001/L_CC_caf\\xe9.dcm: the file name is not UTF-8 text (AccessionNumber=ACC001, row 3)"


CASES = {
    "one_pixel_wide": (one_pixel_wide, 1),
    "ct_slice": (ct_slice, 1),
    "non_utf8_name": (non_utf8_name, 1),
    "corrupt": (corrupt_file, 1),
    "truncated": (truncated_file, 1),
    "no_pixels": (no_pixel_data, 1),
    "undecodable": (undecodable_pixels, 1),
    "missing_folder": (missing_folder, 1),
    "empty_folder": (empty_folder, 1),
    "unknown_label": (unknown_label, 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_errors_or_is_skipped(dataset, make_datamodule, case):
    csv, root = dataset
    spoil, skipped = CASES[case]
    message = spoil(csv, root)
    with pytest.raises(DataError) as info:
        make_datamodule(csv, root, cache_mode="memory")
    assert message in str(info.value) and "\n" not in str(info.value)
    dm = make_datamodule(csv, root, cache_mode="memory", on_bad_file="skip")
    assert len(dm.samples.skipped) == skipped and dm.describe()["skipped"] == skipped
    assert message in dm.manifest["skipped"][0]["reason"]
    images = 40 - (2 if case in ("missing_folder", "empty_folder", "unknown_label") else 1)
    assert len(dm.train_table) + len(dm.val_table) == images == dm.manifest["num_images"]
    assert "ACC001/L_CC" not in set(dm.split["image_id"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot parse CSV"),
        ("AccessionNumber,Classification\n", "no rows"),
        ("AccessionNumber,Density\nACC000,1\n", "missing column(s) Classification"),
    ],
)
def test_csv_structure_errors_are_never_skipped(dataset, make_datamodule, text, message):
    csv, root = dataset
    csv.write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_datamodule(csv, root, on_bad_file="skip")


def test_a_class_without_samples_is_an_error(dataset, make_datamodule):
    csv, root = dataset
    lines = [line for line in csv.read_text().splitlines() if ",D," not in line]
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"density class\(es\) \[4\] have no samples"):
        make_datamodule(csv, root)


def test_a_val_split_missing_a_class_is_an_error(dataset, make_datamodule, tmp_path):
    csv, root = dataset
    split = tmp_path / "split.csv"
    val = {"PAT000", "PAT001", "PAT002"}  # classes 1-3 only
    split.write_text(
        "PatientID,split\n"
        + "".join(f"PAT{p:03d},{'val' if f'PAT{p:03d}' in val else 'train'}\n" for p in range(20))
    )
    with pytest.raises(DataError, match=r"the val split has no image of density \[4\]"):
        make_datamodule(csv, root, split_csv=str(split))


@pytest.mark.parametrize("outside", ["absolute", "dotdot"])
def test_an_image_path_outside_the_root_is_a_bad_row(dataset, make_datamodule, tmp_path, outside):
    """``image_path`` must lie inside ``data.dicom_root``: an absolute path elsewhere, or a ``../``
    that leaves it, is a bad row named by its row, never a traceback nor a silent read."""
    csv, root = dataset
    elsewhere = tmp_path / "elsewhere" / "X.dcm"
    elsewhere.parent.mkdir()
    (root / "ACC000" / "L_CC.dcm").rename(elsewhere)
    given = str(elsewhere) if outside == "absolute" else "../../elsewhere/X.dcm"
    rows = [f"ACC{p:03d}/{side}_CC.dcm,{'ABCD'[p % 4]}" for p in range(20) for side in "LR"]
    rows[0] = f"{given},A"
    csv.write_text("image_path,Classification\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        make_datamodule(csv, root)
    message = str(info.value)
    assert f"row 2: image_path {given!r} is outside {root}: images must lie inside data.dicom_root" in message
    dm = make_datamodule(csv, root, on_bad_file="skip")
    assert len(dm.samples.skipped) == 1 and len(dm.train_table) + len(dm.val_table) == 39


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cache_mode": "ram"}, "data.cache_mode='ram': expected one of none, memory, disk"),
        ({"cache_mode": "disk", "cache_dir": None}, "data.cache_mode=disk needs data.cache_dir"),
        ({"num_workers": None}, "data.num_workers: missing (each data setting's default is in conf/data/"),
        ({"shuffle_buffer": 8}, "data.shuffle_buffer: not a data setting"),
    ],
)
def test_a_bad_or_missing_loader_setting_is_one_line_naming_it(dataset, make_datamodule, options, message):
    from mammo.data.datamodule import DensityDataModule

    if options.get("num_workers", 0) is None:  # a caller without the config passes every setting
        settings = {"csv": str(dataset[0]), "img_size": 32, "batch_size": 8, "cache_mode": "none"}
        with pytest.raises(DataError) as info:
            DensityDataModule.from_config(**settings, cache_dir=None, train_augment=True, seed=1)
    else:
        with pytest.raises(DataError) as info:
            make_datamodule(*dataset, setup=False, **options)
    assert str(info.value).startswith(message)


def test_a_bad_cache_mode_stops_a_training_run_with_one_line(tmp_path, demo_root, capsys):
    import json

    from mammo.train import main
    from tests.conftest import SMALL_DEMO, TINY, run_cli

    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, [*TINY, *SMALL_DEMO, *paths, "epochs=1", "data.cache_mode=ram"]) == 1
    assert "data.cache_mode='ram': expected one of none, memory, disk" in capsys.readouterr().err
    (summary,) = tmp_path.glob("*/results_*/summary.json")
    assert json.loads(summary.read_text())["status"] == "failed"


def test_a_table_whose_every_file_is_refused_says_why(dataset, make_datamodule):
    """54 refused files used to give "no usable images (54 skipped, 0 excluded)" and no reason."""
    csv, root = dataset
    for i, path in enumerate(sorted(root.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.Modality = "CT" if i % 4 else "MR"
        ds.save_as(path)
    with pytest.raises(DataError) as info:
        make_datamodule(csv, root, on_bad_file="skip")
    message = str(info.value)
    assert message.startswith(f"{csv}: no usable images (40 skipped: 30 Modality CT is not a mammogram, ")
    assert (
        "10 Modality MR is not a mammogram; first: ACC000/L_CC.dcm, ACC000/R_CC.dcm, ACC001/L_CC.dcm ...)"
        in message
    )


def test_refused_files_are_counted_by_reason_in_the_log(dataset, make_datamodule, caplog):
    csv, root = dataset
    ct_slice(csv, root)
    one_pixel = root / "ACC002" / "L_CC.dcm"
    ds = pydicom.dcmread(one_pixel)
    ds.Modality = "MR"
    ds.save_as(one_pixel)
    with caplog.at_level("WARNING", logger="mammo"):
        make_datamodule(csv, root, on_bad_file="skip")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert line.endswith(
        ": 1 Modality CT is not a mammogram, 1 Modality MR is not a mammogram; "
        "first: ACC001/L_CC.dcm, ACC002/L_CC.dcm"
    )


@pytest.mark.parametrize("rule", ["warn", "error", "drop"])
def test_identical_files_under_two_patients_are_named_before_training(dataset, make_datamodule, caplog, rule):
    """Training used to run on them without a word; the review found them only afterwards."""
    import shutil

    csv, root = dataset
    shutil.copy(root / "ACC000" / "L_CC.dcm", root / "ACC001" / "L_CC.dcm")  # patient 1, density B
    if rule == "error":
        with pytest.raises(DataError, match=r"data.on_duplicate=error: 1 group\(s\) of identical files"):
            make_datamodule(csv, root, on_duplicate=rule)
        return
    with caplog.at_level("WARNING", logger="mammo"):
        dm = make_datamodule(csv, root, on_duplicate=rule)
    (line,) = [r.getMessage() for r in caplog.records if "identical files" in r.getMessage()]
    assert line.startswith("1 group(s) of identical files under two patients or two labels")
    assert "e.g. ACC000/L_CC = ACC001/L_CC: patients PAT000, PAT001, labels 1, 2" in line
    (record,) = dm.manifest["duplicates"]
    assert record["images"] == ["ACC000/L_CC", "ACC001/L_CC"] and record["labels"] == [1, 2]
    images = set(dm.split["image_id"])
    if rule == "warn":
        assert record["kept"] is None and {"ACC000/L_CC", "ACC001/L_CC"} <= images
    else:
        assert record["kept"] == "ACC000/L_CC" and "kept the first image of each, dropped 1" in line
        assert "ACC001/L_CC" not in images and len(images) == 39


def test_a_manifest_without_duplicates_has_no_record(dataset, make_datamodule):
    csv, root = dataset
    assert "duplicates" not in make_datamodule(csv, root).manifest  # clean data keeps its manifest hash
