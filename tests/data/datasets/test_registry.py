"""Every ``data=<dataset>`` config trains the tiny model end to end; the density mapping, the
exclusion counts and the errors for bad label files are checked."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mammo.core.errors import DataError
from mammo.data.datasets import read_public
from mammo.data.demo import write_dicom
from mammo.data.settings import BadInput
from tests.conftest import TINY, run_cli
from tests.data.datasets.fakes import J2K_LOSSLESS, RNG, make_inbreast, make_rsna, make_vindr, write_csv
from tests.data.datasets.fakes_cbis_embed import make_cbis, make_embed
from tests.data.ljpeg import JPEG_LOSSLESS_SV1, compress_file

MAKERS = {
    "rsna": make_rsna,
    "vindr": make_vindr,
    "cbis_ddsm": make_cbis,
    "embed": make_embed,
    "inbreast": make_inbreast,
}


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_dataset_config_trains_end_to_end(tmp_path, dataset):
    from mammo.train import main

    fixture = MAKERS[dataset](tmp_path / dataset)
    out = tmp_path / "outputs"
    args = [*TINY, "epochs=1", "gradcam_per_class=0", f"data={dataset}", f"data.root={tmp_path / dataset}"]
    assert run_cli(main, [*args, f"paths.output_dir={out}"]) == 0
    [run] = list((out / "mammo_tiny_density").glob("results_*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["data_config"]["dataset"] == dataset
    manifest = json.loads((run / "data_manifest.json").read_text())
    labels = {f["image_id"]: f["label"] for f in manifest["files"]}
    assert labels == fixture["labels"]  # every usable image once, with its density mapped to 1-4
    assert Counter(e["reason"] for e in manifest["excluded"]) == fixture["excluded"]
    assert summary["data_config"]["excluded"] == sum(fixture["excluded"].values())
    preds = pd.read_csv(run / "val_predictions.csv", dtype={"laterality": str, "view": str})
    assert set(preds["laterality"]) <= {"L", "R"} and set(preds["view"]) <= {"CC", "MLO", "ML"}
    split = pd.read_csv(run / "split.csv", dtype=str)
    if "test" in fixture:  # VinDr: the official test split is the locked test split
        assert set(split.loc[split["split"] == "test", "image_id"]) == fixture["test"]
        assert summary["data_config"]["official_split"] is True
        assert summary["data_config"]["num_test"] == len(fixture["test"]) and summary["test_metrics"]
        tested = pd.read_csv(run / "test_predictions.csv", dtype={"image_id": str})
        assert set(tested["image_id"]) == fixture["test"]
    assert not split.groupby("PatientID")["split"].nunique().gt(1).any()


def test_unknown_density_value_names_file_row_and_value(tmp_path):
    make_inbreast(tmp_path)
    with open(tmp_path / "INbreast.csv", newline="") as f:
        header, *rows = list(csv.reader(f, delimiter=";"))
    rows[2][header.index("ACR")] = "X"  # line 4 of the file
    write_csv(tmp_path / "INbreast.csv", header, rows, delimiter=";")
    with pytest.raises(DataError, match=r"INbreast.csv: row 4: unknown ACR 'X'"):
        read_public("inbreast", tmp_path / "INbreast.csv", tmp_path / "AllDICOMs", BadInput("error"))


def test_missing_published_column_is_named(tmp_path):
    write_csv(tmp_path / "train.csv", ["patient_id", "image_id", "laterality", "view"], [[1, 2, "L", "CC"]])
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) density"):
        read_public("rsna", tmp_path / "train.csv", tmp_path, BadInput("error"))


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("syntax", [J2K_LOSSLESS, JPEG_LOSSLESS_SV1])
def test_rsna_transfer_syntaxes_decode_to_the_stored_pixels(tmp_path, syntax, photometric):
    from mammo.data.images import decode, read_image

    stored = RNG.integers(0, 4096, size=(40, 32)).astype(np.uint16)
    path = write_dicom(
        tmp_path / "x.dcm",
        stored,
        patient_id="10006",
        accession="10006",
        photometric=photometric,
        transfer_syntax=syntax if syntax == J2K_LOSSLESS else None,
    )
    if syntax == JPEG_LOSSLESS_SV1:
        compress_file(path)
    ds, pixels = decode(path)
    assert ds.file_meta.TransferSyntaxUID == syntax and np.array_equal(pixels, stored)
    image = read_image(path, window="minmax")
    brightest = np.unravel_index(np.argmax(stored), stored.shape)
    # MONOCHROME1: the largest stored value is displayed black
    assert image[brightest] == (0.0 if photometric == "MONOCHROME1" else 1.0)
