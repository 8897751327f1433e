"""Small trees that follow each public dataset's published layout exactly: its label file's
header, synthetic DICOMs where the dataset puts them (``shared/spec/public-datasets.md``).

Each ``make_<dataset>(root)`` returns the usable images' labels and the exclusions expected."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from mammo.data.demo import phantom, write_dicom
from tests.data.ljpeg import compress_file

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
    rows, expected, test = [], {}, set()
    for p in range(PATIENTS):
        study = vindr_study(p)
        split = "test" if p < 4 else "training"  # one patient of each density; 5 left per density
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
                test.add(f"{study}/{image}")
    write_csv(root / "breast-level_annotations.csv", header.split(","), rows)
    return {"labels": expected, "excluded": Counter(), "test": test}


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
