"""Label tables as users export them: encodings, repeated rows, views, splits too small to make."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mammo.core.errors import DataError
from mammo.data.datamodule import grouped_val_mask, kfold_assignment
from mammo.data.demo import write_dicom
from mammo.data.labels import load_samples
from tests.data.test_labels_and_splits import make_archive

ROWS = "AccessionNumber,Classification\nA1,B\nA2,4\n"


def test_excel_csv_utf8_with_byte_order_mark_is_read(tmp_path):
    csv, root = make_archive(tmp_path, ROWS, {"A1": 1, "A2": 1})
    csv.write_bytes(ROWS.encode("utf-8-sig"))  # Excel's "CSV UTF-8 (Comma delimited)"
    table = load_samples(csv, root).table
    assert list(table["AccessionNumber"]) == ["A1", "A2"] and list(table["label"]) == [1, 3]


@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (lambda text: text.replace(",", "\t").encode("utf-16"), "is UTF-16 text (Excel's 'Unicode Text')"),
        (lambda text: (text + "A3,C,Jos\xe9\n").encode("cp1252"), "line 4: byte 0xe9 is not UTF-8 text"),
    ],
)
def test_other_excel_exports_are_one_clear_line(tmp_path, encode, message):
    csv, root = make_archive(tmp_path, ROWS, {"A1": 1, "A2": 1})
    csv.write_bytes(encode(ROWS))
    with pytest.raises(DataError) as info:
        load_samples(csv, root)
    text = str(info.value)
    assert str(csv) in text and message in text and "CSV UTF-8" in text and "\n" not in text


def test_conflicting_repeated_accessions_name_both_rows(tmp_path):
    csv, root = make_archive(
        tmp_path, "AccessionNumber,Classification\nA1,C\nA2,2\nA1,A\n", {"A1": 4, "A2": 1}
    )
    with pytest.raises(DataError) as info:
        load_samples(csv, root)
    assert str(info.value) == (
        f"{csv}: rows 2, 4: AccessionNumber=A1 is listed with conflicting Classification "
        "('C' in row 2, 'A' in row 4)"
    )
    samples = load_samples(csv, root, on_bad_file="skip")  # left out whole, and listed
    assert list(samples.table["AccessionNumber"]) == ["A2"]
    assert samples.skipped == [{"row": 2, "rows": [2, 4], "AccessionNumber": "A1", "reason": str(info.value)}]


def test_identical_repeated_rows_are_used_once_with_a_warning(tmp_path, caplog):
    csv, root = make_archive(
        tmp_path, "AccessionNumber,Classification\nA1,C\nA2,2\nA1,3\n", {"A1": 4, "A2": 1}
    )
    with caplog.at_level(logging.WARNING, logger="mammo.data"):
        table = load_samples(csv, root).table
    assert list(table["AccessionNumber"]) == ["A1"] * 4 + ["A2"]  # 4 images once each, not twice
    assert list(table["label"]) == [2, 2, 2, 2, 1]
    assert (
        "rows 2, 4: AccessionNumber=A1 is listed 2 times with the same Classification; used once"
        in caplog.text
    )


def test_repeated_image_paths_follow_the_same_rule(tmp_path):
    csv, root = make_archive(tmp_path, "", {"A1": 2})
    csv.write_text("image_path,Classification\nA1/0.dcm,1\nA1/1.dcm,2\nA1/0.dcm,4\n")
    with pytest.raises(DataError, match="rows 2, 4: image_path=A1/0.dcm is listed with conflicting"):
        load_samples(csv, root)


def test_views_other_than_cc_and_mlo_are_excluded_and_counted(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("AccessionNumber,Classification\nA1,2\n")
    for view in ("CC", "MLO", "AT", "LM", "ML", "LMO", ""):
        path = tmp_path / "archive" / "A1" / f"{view or 'none'}.dcm"
        write_dicom(path, np.zeros((16, 16), np.uint16), patient_id="P1", accession="A1", view=view)
    samples = load_samples(csv, tmp_path / "archive")
    assert sorted(samples.table["view"]) == ["", "CC", "MLO"]  # an unknown view is kept
    assert sorted(r["reason"] for r in samples.excluded) == [
        f"view {v} not in data.views" for v in ("AT", "LM", "LMO", "ML")
    ]
    assert len(load_samples(csv, tmp_path / "archive", views=None).table) == 7
    only_cc = load_samples(csv, tmp_path / "archive", views=["cc"])
    assert sorted(only_cc.table["view"]) == ["", "CC"]


def test_a_split_too_fine_for_the_rarest_density_names_it_and_the_fix():
    labels = np.array([0, 1, 1, 1, 1, 2, 2, 2, 2, 3])  # one image per patient, each density < 5
    groups = np.arange(10)
    with pytest.raises(DataError) as info:
        grouped_val_mask(labels, groups, 0.2, seed=0)
    text = str(info.value)
    assert text.startswith("data.val_fraction=0.2: a patient-grouped, class-stratified split into 5 folds")
    assert "patients per density: 1: 1, 2: 4, 3: 4, 4: 1" in text
    assert "data.val_fraction" in text and "data.split_csv" in text and "n_splits" not in text
    with pytest.raises(DataError, match=r"^cv.folds=5: .* patients per density"):
        kfold_assignment(labels, groups, 5, seed=0)
