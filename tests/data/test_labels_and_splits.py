"""Label CSVs -> samples, and the patient-grouped split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo.core.errors import DataError
from mammo.data.datamodule import check_no_leakage, grouped_val_mask, kfold_assignment
from mammo.data.demo import write_dicom
from mammo.data.labels import load_samples, parse_density, read_label_csv
from mammo.data.settings import LabelColumns


def make_archive(tmp_path, rows: str, folders: dict[str, int]):
    csv = tmp_path / "labels.csv"
    csv.write_text(rows)
    for acc, n in folders.items():
        for i in range(n):
            write_dicom(
                tmp_path / "archive" / acc / f"{i}.dcm",
                np.zeros((16, 16), np.uint16),
                patient_id=f"PAT-{acc}",
                accession=acc,
            )
    return csv, tmp_path / "archive"


def test_letters_and_digits_map_to_1_4_and_class_5_is_excluded(tmp_path):
    csv, root = make_archive(
        tmp_path, "AccessionNumber,Classification\nA1,B\nA2,4\nA3,5\nA4,a\n", {"A1": 2, "A2": 1, "A4": 1}
    )
    samples = load_samples(csv, root)
    table = samples.table
    assert list(table["AccessionNumber"]) == ["A1", "A1", "A2", "A4"]
    assert list(table["label"]) == [1, 1, 3, 0]  # 0-based
    assert list(table["PatientID"]) == ["PAT-A1", "PAT-A1", "PAT-A2", "PAT-A4"]  # from the headers
    assert samples.excluded == [{"row": 4, "AccessionNumber": "A3", "reason": "class 5 excluded"}]
    assert samples.class_labels == [1, 2, 3, 4]


def test_patient_column_in_csv_wins_over_header(tmp_path):
    csv, root = make_archive(tmp_path, "AccessionNumber,Classification,PatientID\nA1,1,X9\n", {"A1": 1})
    assert list(load_samples(csv, root).table["PatientID"]) == ["X9"]


def test_include_class_5(tmp_path):
    csv, root = make_archive(tmp_path, "AccessionNumber,Classification\nA1,5\n", {"A1": 1})
    samples = load_samples(csv, root, include_class_5=True)
    assert list(samples.table["label"]) == [4] and samples.class_labels == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "AccessionNumber,Density\nA1,2\n",
            "missing column(s) Classification; found: AccessionNumber, Density",
        ),
        (
            "AccessionNumber,Classification\nA1,2\nA2,X\n",
            "row 3 (AccessionNumber=A2): unknown Classification 'X'",
        ),
        ("AccessionNumber,Classification\n", "no rows"),
        ("", "cannot parse CSV"),
    ],
)
def test_bad_csv_errors_name_file_and_row(tmp_path, rows, message):
    csv = tmp_path / "labels.csv"
    csv.write_text(rows)
    with pytest.raises(DataError) as info:
        read_label_csv(csv)
    assert message in str(info.value) and "labels.csv" in str(info.value)


def test_missing_and_empty_accession_folders(tmp_path):
    csv, root = make_archive(tmp_path, "AccessionNumber,Classification\nA1,1\nA2,2\n", {"A1": 1})
    with pytest.raises(DataError, match="accession folder missing for AccessionNumber=A2"):
        load_samples(csv, root)
    (root / "A2").mkdir()
    with pytest.raises(DataError, match="accession folder is empty"):
        load_samples(csv, root)


def test_parse_density_rejects_unknown():
    with pytest.raises(ValueError):
        parse_density("E")


def test_grouped_split_never_leaks_and_is_stratified():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 4)
    labels = np.repeat(rng.integers(0, 4, 50), 4)
    mask = grouped_val_mask(labels, groups, 0.2, seed=1)
    assert not set(groups[mask]) & set(groups[~mask])
    assert 0.1 < mask.mean() < 0.3
    assert set(labels[mask]) == set(range(4))
    np.testing.assert_array_equal(mask, grouped_val_mask(labels, groups, 0.2, seed=1))
    assert not np.array_equal(mask, grouped_val_mask(labels, groups, 0.2, seed=2))


def test_split_is_remembered_in_the_cache_folder_and_equals_a_fresh_one(tmp_path, monkeypatch):
    from mammo.data import datamodule as splits

    rng = np.random.default_rng(0)
    groups = np.repeat([f"P{i}" for i in range(60)], 2)
    labels = np.repeat(rng.integers(0, 4, 60), 2)
    fresh_mask, fresh_folds = grouped_val_mask(labels, groups, 0.2, 3), kfold_assignment(labels, groups, 5, 3)
    mask = grouped_val_mask(labels, groups, 0.2, 3, memo_dir=tmp_path)
    (memo,) = (tmp_path / "splits").glob("*.npy")
    np.testing.assert_array_equal(mask, fresh_mask)
    calls = []
    monkeypatch.setattr(splits, "grouped_folds", lambda *a: calls.append(a) or iter(()))
    np.testing.assert_array_equal(grouped_val_mask(labels, groups, 0.2, 3, memo_dir=tmp_path), fresh_mask)
    # CV over as many folds shares the memo: fold 1 is the validation split above
    np.testing.assert_array_equal(kfold_assignment(labels, groups, 5, 3, memo_dir=tmp_path), fresh_folds)
    assert calls == []  # read back, not recomputed
    grouped_val_mask(labels, groups, 0.2, 4, memo_dir=tmp_path)
    assert len(calls) == 1  # another seed is another memo
    monkeypatch.undo()
    memo.write_bytes(b"damaged")
    np.testing.assert_array_equal(grouped_val_mask(labels, groups, 0.2, 3, memo_dir=tmp_path), fresh_mask)


def test_leakage_check_fails_loudly():
    with pytest.raises(DataError, match="leaks 1 patient"):
        check_no_leakage(np.array(["a", "a", "b"]), np.array([True, False, False]))


def test_image_path_csv_with_laterality_and_view_columns(tmp_path):
    for i, name in enumerate(["a/x.dcm", "b/y.dcm"]):
        write_dicom(
            tmp_path / "imgs" / name, np.zeros((16, 16), np.uint16), patient_id=f"H{i}", accession=f"ACC{i}"
        )
    csv = tmp_path / "imgs" / "labels.csv"
    csv.write_text("image_path;Classification;side;projection\na/x.dcm;C;l;CC\nb/y.dcm;2;R;MLO\n")
    samples = load_samples(
        csv, None, columns=LabelColumns(laterality_column="side", view_column="projection")
    )
    table = samples.table
    assert samples.source["layout"] == "image_path"
    assert list(table["relpath"]) == ["a/x.dcm", "b/y.dcm"] and list(table["label"]) == [2, 1]
    assert list(table["PatientID"]) == ["H0", "H1"] and list(table["AccessionNumber"]) == ["ACC0", "ACC1"]
    assert list(table["laterality"]) == ["L", "R"] and list(table["view"]) == ["CC", "MLO"]
    assert all(len(s) == 64 for s in table["sha256"])
    with pytest.raises(DataError, match="missing column"):
        load_samples(csv, None, columns=LabelColumns(laterality_column="Laterality"))
    csv.write_text("image_path,Classification\na/x.dcm,1\nc/z.dcm,2\n")
    with pytest.raises(DataError, match=r"row 3: image_path 'c/z.dcm' not found"):
        load_samples(csv, None)


def test_laterality_and_view_default_to_the_dicom_tags(tmp_path):
    csv, root = make_archive(tmp_path, "AccessionNumber,Classification\nA1,1\n", {"A1": 1})
    write_dicom(
        root / "A1" / "0.dcm",
        np.zeros((16, 16), np.uint16),
        patient_id="P",
        accession="A1",
        laterality="R",
        view="MLO",
    )
    table = load_samples(csv, root).table
    assert table.loc[0, "laterality"] == "R" and table.loc[0, "view"] == "MLO"


def test_preset_split_round_trip_and_leak_check(tmp_path):
    from mammo.data.datamodule import preset_sides, split_frame

    table = pd.DataFrame(
        {
            "image_id": ["a/1", "a/2", "b/1", "c/1", "d/1"],
            "AccessionNumber": ["a", "a", "b", "c", "d"],
            "PatientID": ["p1", "p1", "p2", "p3", "p4"],
            "label": [0, 0, 1, 2, 3],
        }
    )
    val, test = np.array([False, False, True, False, False]), np.array([False, False, False, False, True])
    sides = ["train", "train", "val", "train", "test"]
    path = tmp_path / "split.csv"
    split_frame(table, val, [1, 2, 3, 4], test).to_csv(path, index=False)
    assert preset_sides(table, path).tolist() == sides  # a run's split.csv, reused
    path.write_text("AccessionNumber,split\na,train\nb,validation\nc,TRAIN\nd,Test\n")
    assert preset_sides(table, path).tolist() == sides
    path.write_text("image_id,split\na/1,train\na/2,val\nb/1,val\nc/1,train\nd/1,test\n")
    with pytest.raises(DataError, match="leaks 1 patient"):
        preset_sides(table, path)
    path.write_text("image_id,split\na/1,test\na/2,train\nb/1,val\nc/1,train\nd/1,test\n")
    with pytest.raises(DataError, match="leaks 1 patient"):
        preset_sides(table, path)
    path.write_text("AccessionNumber,split\na,train\nb,val\nd,test\n")
    with pytest.raises(
        DataError, match=r"1 AccessionNumber value\(s\) of the data not in the split: \['c'\]"
    ):
        preset_sides(table, path)
    path.write_text("AccessionNumber,split\na,train\nb,holdout\nc,train\nd,test\n")
    with pytest.raises(DataError, match="row 3: unknown split 'holdout' \\(expected train, val or test\\)"):
        preset_sides(table, path)
    path.write_text("AccessionNumber,split\na,train\nb,val\nb,test\nc,train\nd,test\n")
    with pytest.raises(DataError, match=r"AccessionNumber on two sides of the split: \['b'\]"):
        preset_sides(table, path)
