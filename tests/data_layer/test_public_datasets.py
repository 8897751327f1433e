"""The public density datasets, read as published: one small fixture per dataset following its
label file's header exactly, with synthetic DICOMs where the dataset puts them; every
``data=<dataset>`` config trains the tiny model end to end, and the density mapping and the
exclusion counts are checked."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo.data.demo import phantom, write_dicom
from mammo.data.labels import BadInput
from mammo.data.public import read_public
from mammo.errors import DataError
from tests.conftest import TINY, run_cli
from tests.data_layer.ljpeg import JPEG_LOSSLESS_SV1, compress_file

PATIENTS = 24  # class of patient p: p % 4 + 1
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
RNG = np.random.default_rng(7)


def dicom(path: Path, density: int, side: str, view: str, patient: str, **kwargs) -> Path:
    image = phantom(density, side, "CC" if view == "CC" else "MLO", (48, 40), RNG)
    stored = np.rint(image * 4000).astype(np.uint16)
    if kwargs.get("photometric") == "MONOCHROME1":
        stored = 4095 - stored
    return write_dicom(
        path, stored, patient_id=patient[:16], accession=patient[:16], uid_key=str(path), **kwargs
    )


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def uid(*parts) -> str:
    return "1.2.826.0.1." + str(int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16))


# ------------------------------------------------------------------------------------ fixtures
def make_rsna(root: Path) -> dict:
    """train.csv + train_images/<patient_id>/<image_id>.dcm; J2K lossless and MONOCHROME1 files."""
    header = "site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,machine_id,difficult_negative_case"  # noqa: E501 (the published header)
    rows, expected = [], {}
    for p in range(PATIENTS + 2):
        patient = 10006 + p
        density = "ABCD"[p % 4] if p < PATIENTS else ""  # the last two patients: no density
        for i, side in enumerate("LR"):
            image_id = 462822612 + 10 * p + i
            path = root / "train_images" / str(patient) / f"{image_id}.dcm"
            dicom(
                path,
                p % 4 + 1,
                side,
                "CC",
                str(patient),
                photometric="MONOCHROME1" if p % 3 == 0 else "MONOCHROME2",
                transfer_syntax=J2K_LOSSLESS if p % 2 == 0 else None,
                bits_stored=12,
            )
            if p % 4 == 1:
                compress_file(path)  # the other RSNA transfer syntax: JPEG Lossless SV1
            rows.append([2, patient, image_id, side, "CC", 61.0, 0, 0, 0, "", 0, density, 29, False])
            if density:
                expected[f"{patient}/{image_id}"] = p % 4 + 1
    for k, view in enumerate(("AT", "LM")):  # RSNA's few non-screening views, density-labelled
        image_id = 462822612 + 10 * PATIENTS + 5 + k
        dicom(root / "train_images" / "10006" / f"{image_id}.dcm", 1, "L", view, "10006")
        rows.append([2, 10006, image_id, "L", view, 61.0, 0, 0, 0, "", 0, "A", 29, False])
    write_csv(root / "train.csv", header.split(","), rows)
    excluded = {
        "no density (density empty)": 4,
        "view AT not in data.views": 1,
        "view LM not in data.views": 1,
    }
    return {"labels": expected, "excluded": Counter(excluded)}


def vindr_study(p: int) -> str:
    return hashlib.md5(f"study{p}".encode()).hexdigest()


def make_vindr(root: Path) -> dict:
    """breast-level_annotations.csv + images/<study_id>/<image_id>.dicom; official split."""
    header = (
        "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
    )
    rows, expected, val = [], {}, set()
    for p in range(PATIENTS):
        study = vindr_study(p)
        split = "test" if p % 5 == 0 else "training"
        for side in "RL":
            image = hashlib.md5(f"image{p}{side}".encode()).hexdigest()
            dicom(root / "images" / study / f"{image}.dicom", p % 4 + 1, side, "CC", study)
            density = f"DENSITY {'ABCD'[p % 4]}"
            rows.append(
                [
                    study,
                    hashlib.md5(f"s{p}".encode()).hexdigest(),
                    image,
                    side,
                    "CC",
                    48,
                    40,
                    "BI-RADS 1",
                    density,
                    split,
                ]
            )
            expected[f"{study}/{image}"] = p % 4 + 1
            if split == "test":
                val.add(f"{study}/{image}")
    write_csv(root / "breast-level_annotations.csv", header.split(","), rows)
    return {"labels": expected, "excluded": Counter(), "val": val}


CBIS_MASS = "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"  # noqa: E501 (the published header)
CBIS_CALC = "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"  # noqa: E501 (the published header)


def make_cbis(root: Path) -> dict:
    """Four case-description CSVs (two spellings of the density column), one row per
    abnormality; the NBIA download layout on disk, except one case kept in the CSV's own layout."""
    files = {(kind, split): [] for kind in ("Mass", "Calc") for split in ("Training", "Test")}
    expected, excluded = {}, Counter()
    for p in range(PATIENTS + 1):
        patient = f"P_{p + 1:05d}"
        kind, split = ("Mass" if p % 2 == 0 else "Calc"), ("Test" if p >= 20 else "Training")
        density = p % 4 + 1 if p < PATIENTS else 0  # the last patient: the invalid density 0
        for view in ("CC", "MLO"):
            case = f"{kind}-{split}_{patient}_LEFT_{view}"
            study, series = uid(case, "study"), uid(case, "series")
            csv_path = f"{case}/{study}/{series}/000000.dcm"
            if p == 3:  # an old download: the CSV's path exists as is
                path = root / "CBIS-DDSM" / csv_path
            else:
                path = (
                    root
                    / "CBIS-DDSM"
                    / case
                    / f"07-20-2016-DDSM-{p:05d}"
                    / f"1.000000-full mammogram images-{p:05d}"
                    / "1-1.dcm"
                )
                roi = (
                    root
                    / "CBIS-DDSM"
                    / f"{case}_1"
                    / f"08-29-2017-DDSM-{p:05d}"
                    / f"1.000000-ROI mask images-{p:05d}"
                    / "1-1.dcm"
                )
                dicom(roi, 1, "L", view, patient)
            dicom(path, max(density, 1), "L", view, patient)
            for abnormality in (1, 2) if view == "CC" else (1,):  # two findings on the CC image
                crop = f"{case}_{abnormality}/{study}/{uid(case, abnormality)}/000000.dcm" + (
                    "\n" if p == 5 else ""
                )
                mass_or_calc = ["IRREGULAR", "SPICULATED"] if kind == "Mass" else ["PLEOMORPHIC", "CLUSTERED"]
                files[(kind, split)].append(
                    [
                        patient,
                        density,
                        "LEFT",
                        view,
                        abnormality,
                        kind.lower(),
                        *mass_or_calc,
                        4,
                        "MALIGNANT",
                        4,
                        csv_path,
                        crop,
                        crop,
                    ]
                )
            if density:
                expected[str(path.relative_to(root / "CBIS-DDSM").with_suffix("").as_posix())] = density
            else:
                excluded["invalid density 0"] += 1
    for (kind, split), rows in files.items():
        name = f"{kind.lower()}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
        write_csv(root / name, (CBIS_MASS if kind == "Mass" else CBIS_CALC).split(","), rows)
    return {"labels": expected, "excluded": excluded}


EMBED_CLINICAL = "empi_anon,acc_anon,study_date_anon,asses,tissueden,desc,side,path_severity,numfind,total_L_find,total_R_find,massshape,massmargin,massdens,calcfind,calcdistri,calcnumber,ETHNICITY_DESC,ETHNIC_GROUP_DESC,age_at_study"  # noqa: E501 (the published header)
EMBED_META = "anon_dicom_path,empi_anon,acc_anon,study_date_anon,StudyDescription,SeriesDescription,FinalImageType,ImageLateralityFinal,ViewPosition,spot_mag,ROI_coords,num_roi"  # noqa: E501 (the published header)


def clinical_row(empi: str, exam: str, tissueden: str, side: str, findings: int) -> list:
    """One EMBED clinical row (one finding), in EMBED_CLINICAL's column order."""
    row = [empi, exam, "2019-01-01", "N", tissueden, "MG Screen", side, "", findings, findings, findings]
    return [*row, *[""] * 6, "White", "Non-Hispanic", 55.0]  # no mass/calc findings described


def make_embed(root: Path) -> dict:
    """Clinical (one row per finding, exam-level tissueden) and metadata (one row per file)
    tables; paths under the original NAS prefix; 2D, C-view and spot/mag images."""
    clinical, meta, expected = [], [], {}
    excluded = Counter()

    def image(
        p: int, exam: str, side: str, view: str, kind: str = "2D", spot: str = "", density: int = 1
    ) -> str:
        empi = f"{10000000 + p}"
        series = uid(exam, side, view, kind)
        rel = f"cohort_1/{empi}/{uid(exam)}/{series}/{uid(series, 'sop')}.dcm"
        dicom(root / "images" / rel, density, side, view, empi)
        meta.append(
            [
                f"/mnt/NAS2/mammo/anon_dicom/{rel}",
                empi,
                exam,
                "2019-01-01",
                "MG Screen Bilat",
                "L CC",
                kind,
                side,
                view,
                spot,
                "",
                0,
            ]
        )
        return rel

    for p in range(PATIENTS):
        exam, density = f"{5000 + p}", p % 4 + 1
        empi = f"{10000000 + p}"
        sides = ("L", "R") if p % 3 else ("B",)  # one finding row per breast, or one for both
        for side in sides:
            clinical.append(clinical_row(empi, exam, f"{density}.0", side, findings=1))
        for side in "LR":
            expected[str(Path(image(p, exam, side, "CC", density=density)).with_suffix(""))] = density
        if p == 1:
            image(p, exam, "L", "CC", kind="cview")
            excluded["not a 2D image (cview)"] += 1
        if p == 2:
            image(p, exam, "R", "ML", spot="1.0")
            excluded["spot compression / magnification view"] += 1
    # a male exam (tissueden 5), an exam without density, an exam whose only clinical row is the left breast
    for p, value, sides in ((PATIENTS, "5.0", "LR"), (PATIENTS + 1, "", "LR"), (PATIENTS + 2, "3.0", "L")):
        exam, empi = f"{5000 + p}", f"{10000000 + p}"
        for side in sides:
            clinical.append(clinical_row(empi, exam, value, side, findings=0))
        for side in "LR":
            rel = image(p, exam, side, "CC", density=3)
            if p == PATIENTS + 2 and side == "L":
                expected[str(Path(rel).with_suffix(""))] = 3
    excluded["male (tissueden 5)"] += 2
    excluded["no density (tissueden empty)"] += 2
    excluded["no clinical row for this exam and side"] += 1
    write_csv(root / "tables" / "EMBED_OpenData_clinical.csv", EMBED_CLINICAL.split(","), clinical)
    write_csv(root / "tables" / "EMBED_OpenData_metadata.csv", EMBED_META.split(","), meta)
    return {"labels": expected, "excluded": excluded}


def make_inbreast(root: Path) -> dict:
    """INbreast.csv (semicolons, space-padded/blank ACR, MLO) +
    AllDICOMs/<name>_<hash>_MG_<side>_<CC|ML>_ANON.dcm."""
    rows, expected = [], {}
    for p in range(PATIENTS + 1):
        patient = hashlib.md5(f"p{p}".encode()).hexdigest()[:16]
        side = "LR"[p % 2]
        for view in ("CC", "MLO"):
            name = str(22678622 + 10 * p + (view == "MLO"))
            acr = f" {p % 4 + 1} " if p % 2 else str(p % 4 + 1)
            if p == PATIENTS:
                acr = " "  # blank density
            file_view = "ML" if view == "MLO" else "CC"
            dicom(
                root / "AllDICOMs" / f"{name}_{patient}_MG_{side}_{file_view}_ANON.dcm",
                p % 4 + 1,
                side,
                view,
                patient,
            )
            rows.append(["removed", "removed", side, view, "201001", name, acr, "2"])
            if p < PATIENTS:
                expected[f"{name}_{patient}_MG_{side}_{file_view}_ANON"] = p % 4 + 1
    header = [
        "Patient ID",
        "Patient age",
        "Laterality",
        "View",
        "Acquisition date",
        "File Name",
        "ACR",
        "Bi-Rads",
    ]
    write_csv(root / "INbreast.csv", header, rows, delimiter=";")
    return {"labels": expected, "excluded": Counter({"no density (ACR empty)": 2})}


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
    if "val" in fixture:  # VinDr: the official test split is the validation split
        assert set(split.loc[split["split"] == "val", "image_id"]) == fixture["val"]
        assert summary["data_config"]["official_split"] is True
    assert not split.groupby("PatientID")["split"].nunique().gt(1).any()


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
    from mammo.data.dicom import decode, read_image

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
