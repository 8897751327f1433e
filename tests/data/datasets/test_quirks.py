"""Each dataset's quirks: VinDr's finding rows, CBIS-DDSM's two spellings and case folders,
EMBED's two tables."""

from __future__ import annotations

import pandas as pd
import pytest

from mammo.core.errors import DataError
from mammo.data.datasets import read_public
from mammo.data.settings import BadInput
from tests.data.datasets.fakes import make_vindr
from tests.data.datasets.fakes_cbis_embed import make_cbis, make_embed


# ------------------------------------------------------------------------------------ quirks
def test_vindr_finding_rows_are_one_sample_per_image(tmp_path):
    make_vindr(tmp_path)
    frame = pd.read_csv(tmp_path / "breast-level_annotations.csv", dtype=str)
    findings = pd.concat([frame, frame.iloc[:3]])  # three images with a second finding
    findings.insert(10, "finding_categories", "['Mass']")
    findings.to_csv(tmp_path / "finding_annotations.csv", index=False)
    table = read_public("vindr", tmp_path / "finding_annotations.csv", tmp_path / "images", BadInput("error"))
    assert len(table.frame) == len(frame) and not table.frame["image_path"].duplicated().any()
    findings.iloc[-1, findings.columns.get_loc("breast_density")] = "DENSITY D"
    findings.to_csv(tmp_path / "finding_annotations.csv", index=False)
    if frame.iloc[2]["breast_density"] != "DENSITY D":
        with pytest.raises(DataError, match=r"row \d+: image .* has breast_density 'DENSITY D'"):
            read_public("vindr", tmp_path / "finding_annotations.csv", tmp_path / "images", BadInput("error"))


def test_cbis_reads_both_spellings_and_matches_case_folders(tmp_path):
    fixture = make_cbis(tmp_path)
    files = sorted(tmp_path.glob("*_case_description_*.csv"))
    table = read_public("cbis_ddsm", files, tmp_path / "CBIS-DDSM", BadInput("error"))
    assert len(table.frame) == len(fixture["labels"])  # one sample per image, not per abnormality
    paths = table.frame["image_path"]
    assert paths.str.endswith("/000000.dcm").sum() == 2  # the old layout, used as written
    assert paths.str.contains("full mammogram images").sum() == len(paths) - 2


def test_embed_needs_its_two_tables(tmp_path):
    make_embed(tmp_path)
    with pytest.raises(DataError, match="data=embed needs data.csv=\\[<clinical table>, <metadata table>\\]"):
        read_public(
            "embed",
            tmp_path / "tables" / "EMBED_OpenData_clinical.csv",
            tmp_path / "images",
            BadInput("error"),
        )


def test_cbis_exams_are_the_patients_case_and_a_film_in_both_files_is_one_image(tmp_path):
    """The case folder (Mass-Test_P_00173_LEFT_CC) was the accession: each film its own exam."""
    import shutil

    import pandas as pd

    fixture = make_cbis(tmp_path)
    files = sorted(tmp_path.glob("*_case_description_*.csv"))
    mass = tmp_path / "mass_case_description_train_set.csv"
    calc = tmp_path / "calc_case_description_train_set.csv"
    film = pd.read_csv(mass).iloc[0]  # P_00001 LEFT CC, listed again in the calc file
    again = pd.read_csv(calc)
    again.loc[len(again)] = {
        **{c: film[c] for c in again.columns if c in film}, "breast density": film["breast_density"],
        "image file path": "Calc-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm",
    }  # fmt: skip
    again.to_csv(calc, index=False)
    root = tmp_path / "CBIS-DDSM"
    (original,) = root.glob("Mass-Training_P_00001_LEFT_CC/*/*full mammogram images*/*.dcm")
    (root / "Calc-Training_P_00001_LEFT_CC/1.2/1.3").mkdir(parents=True)
    shutil.copy(original, root / "Calc-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm")  # as downloaded twice
    table = read_public("cbis_ddsm", files, tmp_path / "CBIS-DDSM", BadInput("error")).frame
    assert len(table) == len(fixture["labels"])  # the film once
    assert (table["AccessionNumber"] == table["PatientID"]).all()
    assert table.groupby(["PatientID", "AccessionNumber", "laterality"]).size().eq(2).all()  # CC + MLO

    again.loc[len(again) - 1, "breast density"] = film["breast_density"] % 4 + 1
    again.to_csv(calc, index=False)
    both = (
        rf"{mass}: row 2: film P_00001 L CC has density \d here and \d in {calc.name} row {len(again) + 1}: "
    )
    with pytest.raises(DataError, match=both + "a film has one density"):
        read_public("cbis_ddsm", files, tmp_path / "CBIS-DDSM", BadInput("error"))
