"""``data.patient_id``: where each image's patient id comes from, and exams whose images carry
several ids (per-image header PatientIDs, as on many de-identified exports)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammo.core.errors import DataError
from mammo.data.demo import phantom, write_dicom


def per_image_ids(root: Path, n_exams: int = 20, csv_patients: bool = False) -> tuple[Path, Path]:
    """``root/labels.csv`` (no patient column unless ``csv_patients``) + two images per exam whose
    header PatientID names the image (``P_00003_LEFT_CC``), and an ``OtherPatientIDs`` per exam."""
    rng = np.random.default_rng(0)
    rows = ["AccessionNumber,Classification" + (",MRN" if csv_patients else "")]
    for e in range(n_exams):
        acc, density = f"ACC{e:03d}", e % 4 + 1
        rows.append(f"{acc},{density}" + (f",MRN{e:03d}" if csv_patients else ""))
        for laterality, side in (("L", "LEFT"), ("R", "RIGHT")):
            path = root / "archive" / acc / f"{laterality}_CC.dcm"
            image = np.rint(phantom(density, laterality, "CC", (48, 40), rng) * 4000).astype(np.uint16)
            write_dicom(path, image, patient_id=f"P_{e:05d}_{side}_CC", accession=acc, laterality=laterality)
            ds = pydicom.dcmread(path)
            ds.OtherPatientIDs = f"PAT{e:03d}"
            ds.save_as(path)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", root / "archive"


def split_exam_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "hold images of several patients" in r.getMessage()
    ]


def test_header_ids_that_change_within_an_exam_are_warned_once_and_recorded(
    tmp_path, make_datamodule, caplog
):
    csv, root = per_image_ids(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="mammo"):
        dm = make_datamodule(csv, root)
    [line] = split_exam_warnings(caplog)
    assert line.startswith("data.patient_id=auto: 20 of 20 exams (AccessionNumber) hold images of several")
    assert "the PatientID of the file headers changes within an exam" in line
    assert "e.g. ACC000: P_00000_LEFT_CC, P_00000_RIGHT_CC; ACC001: P_00001_LEFT_CC" in line
    assert "set data.patient_id=accession" in line
    manifest = dm.manifest
    assert manifest["patient_ids"] == {"setting": "auto", "from": {"header PatientID": 40}}
    first = manifest["exams_with_several_patients"][0]
    assert first == {
        "AccessionNumber": "ACC000",
        "patients": ["P_00000_LEFT_CC", "P_00000_RIGHT_CC"],
        "images": ["ACC000/L_CC", "ACC000/R_CC"],
        "from": ["header PatientID"],
    }
    assert len(manifest["exams_with_several_patients"]) == 20


@pytest.mark.parametrize(
    ("setting", "patients"),
    [("accession", "ACC{:03d}"), ("header:OtherPatientIDs", "PAT{:03d}"), ("column", "MRN{:03d}")],
)
def test_data_patient_id_says_where_the_ids_come_from(tmp_path, make_datamodule, caplog, setting, patients):
    csv, root = per_image_ids(tmp_path / "data", csv_patients=True)
    with caplog.at_level(logging.INFO, logger="mammo"):
        dm = make_datamodule(csv, root, patient_id=setting, patient_column="MRN", val_fraction=0.25)
    assert split_exam_warnings(caplog) == []
    table = dm.samples.table
    expected = [patients.format(int(acc.removeprefix("ACC"))) for acc in table["AccessionNumber"]]
    assert table["PatientID"].tolist() == expected
    assert dm.manifest["num_patients"] == 20 and "exams_with_several_patients" not in dm.manifest
    assert dm.manifest["patient_ids"]["setting"] == setting
    sides = dm.val_table.groupby("AccessionNumber").size()
    assert (sides == 2).all()  # each exam whole on its side


def test_auto_takes_the_label_column_before_the_header(tmp_path, make_datamodule, caplog):
    csv, root = per_image_ids(tmp_path / "data", csv_patients=True)
    dm = make_datamodule(csv, root, patient_column="MRN", val_fraction=0.25)
    assert dm.samples.table["PatientID"].str.startswith("MRN").all()
    assert dm.manifest["patient_ids"]["from"] == {"label column MRN": 40}


def test_a_label_column_that_splits_an_exam_is_said_too(tmp_path, make_datamodule, caplog):
    csv, root = per_image_ids(tmp_path / "data")
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(["image_path,Classification,PatientID"] + [
        f"{acc}/{side}_CC.dcm,{label},{acc}-{side}" for acc, label in (r.split(",") for r in lines[1:])
        for side in "LR"
    ]) + "\n")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="mammo"):
        make_datamodule(csv, root)
    [line] = split_exam_warnings(caplog)
    assert (
        "20 of 20 exams" in line and "the patient ids (label column PatientID) differ within an exam" in line
    )


def test_bad_patient_id_settings_are_one_line_naming_the_key(tmp_path, make_datamodule):
    csv, root = per_image_ids(tmp_path / "data", n_exams=4)
    with pytest.raises(DataError, match=r"data.patient_id='file': expected auto, column, header"):
        make_datamodule(csv, root, patient_id="file")
    with pytest.raises(
        DataError, match=r"data.patient_id=column needs the column data.patient_column='PatientID'"
    ):
        make_datamodule(csv, root, patient_id="column")
    with pytest.raises(
        DataError, match=r"ACC000/L_CC.dcm: no patient id in its DICOM header IssuerOfPatientID"
    ):
        make_datamodule(csv, root, patient_id="header:IssuerOfPatientID")


def test_the_cli_takes_a_header_keyword(tmp_path):
    from hydra import compose, initialize_config_dir

    from mammo import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose(
            "train", overrides=["data=dicom_csv", "data.csv=x.csv", "data.patient_id=header:OtherPatientIDs"]
        )
    assert cfg.data.patient_id == "header:OtherPatientIDs"
