"""CBIS-DDSM label files as published (``data=cbis_ddsm``; ``shared/spec/public-datasets.md``)."""

from __future__ import annotations

from pathlib import Path

from mammo.data.datasets.common import Density, LabelTable, finish, laterality_code, read_table
from mammo.data.datasets.registry import register


@register("cbis_ddsm")
def read_cbis_ddsm(files: list[Path], dicom_root: Path, bad, **_) -> LabelTable:
    """CBIS-DDSM case description CSVs (mass/calc, train/test): one row per abnormality, one
    sample per image; density 1-4 (``breast_density`` or ``breast density``), ``0`` left out. The
    CSV's ``image file path`` (``<case>/<StudyUID>/<SeriesUID>/000000.dcm``) if it exists under
    ``dicom_root``, else the case folder's ``*full mammogram images*`` DICOM (NBIA downloads). A
    DDSM case is one patient's screening exam: the exam is ``patient_id``, a breast its side; a case
    folder (``Mass-Test_P_00173_LEFT_CC``) names one film. A film in the mass and the calc files is
    one image; two densities for it are a bad row (:func:`listed_before`)."""
    rows, excluded, seen, films = [], [], {}, {}
    locate = _CbisLocator(dicom_root)
    for path in files:
        frame = read_table(
            path,
            [
                ["patient_id"],
                ["breast_density", "breast density"],
                ["left or right breast"],
                ["image view"],
                ["image file path"],
            ],
        )
        density = Density(path, "breast density", bad)
        for r in frame.to_dict("records"):
            csv_path = r["image file path"].strip().replace("\\", "/")
            row = int(r["csv_row"])
            if csv_path in seen:
                continue  # another abnormality of the same image
            seen[csv_path] = row
            where = {"file": path.name, "row": row, "image": csv_path}
            value = density.label(
                r["breast_density"], row, where, excluded, exclude={"0": "invalid density 0"}
            )
            if value is None:
                continue
            film = (r["patient_id"].strip(), laterality_code(r["left or right breast"]), r["image view"])
            if listed_before(films, film, (path, row, value), bad):
                continue  # the same film in the mass and the calc files: one image
            found = locate(csv_path)
            if found is None:
                bad(
                    f"{path}: row {row}: image {csv_path!r} not found under {dicom_root} "
                    "(neither that path nor a '*full mammogram images*' DICOM in its case folder)",
                    row=row,
                    file=path.name,
                )
                continue
            rows.append(
                {
                    "image_path": found,
                    "density": value,
                    "PatientID": r["patient_id"],
                    "AccessionNumber": film[0],  # the patient's DDSM case: one screening exam
                    "laterality": film[1],
                    "view": r["image view"],
                    "split": "",
                    "csv_row": row,
                }
            )
    return finish(rows, excluded, list(files))


def listed_before(films: dict, film: tuple, here: tuple, bad) -> bool:
    """Whether ``film`` (patient, side, view) came in an earlier row, which is then the image;
    one that gave it another density makes this row (``here``: label file, row, density) a bad row
    naming both. A film not seen before is remembered."""
    if film not in films:
        films[film] = here
        return False
    (first_file, first_row, first_value), (path, row, value) = films[film], here
    if first_value != value:
        bad(
            f"{path}: row {row}: film {' '.join(film)} has density {value} here and {first_value} in "
            f"{first_file.name} row {first_row}: a film has one density",
            row=row,
            file=path.name,
        )
    return True


class _CbisLocator:
    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, csv_path: str) -> str | None:
        if (self.root / csv_path).is_file():
            return csv_path
        case = self.root / csv_path.split("/")[0]
        if not case.is_dir():
            return None
        found = sorted(p for p in case.glob("*/*full mammogram images*/*.dcm") if p.is_file())
        return found[0].relative_to(self.root).as_posix() if len(found) == 1 else None
