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
