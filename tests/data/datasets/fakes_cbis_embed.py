"""CBIS-DDSM and EMBED trees as published (see ``fakes``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.data.datasets.fakes import PATIENTS, dicom, uid, write_csv

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
            path = root / "CBIS-DDSM" / csv_path if p == 3 else cbis_download(root, case, p, view, patient)
            dicom(path, max(density, 1), "L", view, patient)
            for abnormality in (1, 2) if view == "CC" else (1,):  # two findings on the CC image
                crop = f"{case}_{abnormality}/{study}/{uid(case, abnormality)}/000000.dcm" + (
                    "\n" if p == 5 else ""
                )
                mass_or_calc = ["IRREGULAR", "SPICULATED"] if kind == "Mass" else ["PLEOMORPHIC", "CLUSTERED"]
                row = [patient, density, "LEFT", view, abnormality, kind.lower(), *mass_or_calc]
                files[(kind, split)].append([*row, 4, "MALIGNANT", 4, csv_path, crop, crop])
            if density:
                expected[str(path.relative_to(root / "CBIS-DDSM").with_suffix("").as_posix())] = density
            else:
                excluded["invalid density 0"] += 1
    for (kind, split), rows in files.items():
        name = f"{kind.lower()}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
        write_csv(root / name, (CBIS_MASS if kind == "Mass" else CBIS_CALC).split(","), rows)
    return {"labels": expected, "excluded": excluded}


def cbis_download(root: Path, case: str, p: int, view: str, patient: str) -> Path:
    """Where the NBIA download puts a case's full mammogram (an ROI mask beside it); returns it."""
    base = root / "CBIS-DDSM"
    roi = base / f"{case}_1" / f"08-29-2017-DDSM-{p:05d}" / f"1.000000-ROI mask images-{p:05d}" / "1-1.dcm"
    dicom(roi, 1, "L", view, patient)
    return base / case / f"07-20-2016-DDSM-{p:05d}" / f"1.000000-full mammogram images-{p:05d}" / "1-1.dcm"


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
