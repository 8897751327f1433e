"""Where each image's patient id comes from (``data.patient_id``), and the exams whose images carry
several ids.

The patient-grouped split (and every interval, a patient bootstrap) is only as good as the
patient ids. ``data.patient_id`` says where they come from:

- ``auto`` (the default): the label table's patient column (``data.patient_column``) where it has
  a value, else the DICOM header's PatientID, else the AccessionNumber;
- ``column``: the label table's ``data.patient_column``, every row;
- ``header`` or ``header:<Keyword>``: a DICOM header element (PatientID, or e.g. OtherPatientIDs);
- ``accession``: the AccessionNumber (every exam its own patient).

Many de-identified exports write a PatientID per image (``Mass-Test_P_00173_LEFT_CC``): an exam's
four images then become four "patients", which a patient-grouped split can put on both sides.
:func:`several_patients_per_exam` finds such exams; :func:`warn_of_split_exams` says so, once,
before training, and ``data_manifest.json`` records them (``exams_with_several_patients``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from mammo.core.errors import DataError

log = logging.getLogger("mammo")
KINDS = ("auto", "column", "header", "accession")
EXAMPLES = 3
"""Exams named in the warning (all are in the manifest)."""


@dataclass(frozen=True)
class PatientSource:
    """Where an image's patient id comes from (see module docstring).

    >>> PatientSource.parse("header:OtherPatientIDs", "PatientID")
    PatientSource(kind='header', column='PatientID', tag='OtherPatientIDs')
    >>> PatientSource.parse("auto", "MRN").patient("", {"PatientID": "P9"}, "A1")
    ('P9', 'header PatientID')
    >>> PatientSource.parse("accession", "MRN").patient("M1", {"PatientID": "P9"}, "A1")
    ('A1', 'accession')
    """

    kind: str = "auto"
    column: str = "PatientID"
    tag: str = "PatientID"

    @classmethod
    def parse(cls, setting: str, column: str) -> PatientSource:
        """``data.patient_id`` (``column`` is ``data.patient_column``); a bad value is named."""
        kind, colon, tag = str(setting).strip().partition(":")
        if kind not in KINDS or (colon and (kind != "header" or not tag.strip())):
            raise DataError(
                f"data.patient_id={setting!r}: expected auto, column, header, header:<DICOM keyword> "
                "or accession (where each image's patient id comes from)"
            )
        return cls(kind, column, tag.strip() or "PatientID")

    @property
    def setting(self) -> str:
        """The ``data.patient_id`` value this source is."""
        return f"header:{self.tag}" if self.kind == "header" else self.kind

    def check_columns(self, csv, columns) -> None:
        """``data.patient_id=column`` needs the label table's patient column (``columns``: its
        column names)."""
        if self.kind == "column" and self.column not in columns:
            raise DataError(
                f"{csv}: data.patient_id=column needs the column data.patient_column={self.column!r}; "
                f"found: {', '.join(columns)}"
            )

    def header_tags(self) -> tuple[str, ...]:
        """The header elements to read besides the usual facts."""
        return (self.tag,) if self.kind == "header" else ()

    def patient(self, cell: str, facts: dict, accession: str) -> tuple[str, str]:
        """An image's patient id and where it came from (``""`` when the chosen place is empty)
        from its label-table ``cell``, its header ``facts`` and its ``accession``."""
        if self.kind == "column":
            return cell, f"label column {self.column}"
        if self.kind == "header":
            return str(facts.get(self.tag, "") or "").strip(), f"header {self.tag}"
        if self.kind == "accession":
            return accession, "accession"
        if cell:
            return cell, f"label column {self.column}"
        if facts.get("PatientID"):
            return facts["PatientID"], "header PatientID"
        return accession, "accession"

    def missing(self) -> str:
        """Why a row without an id of the chosen kind is refused."""
        if self.kind == "column":
            return f"no patient id in its label column {self.column} (data.patient_id=column)"
        return f"no patient id in its DICOM header {self.tag} (data.patient_id={self.setting})"


def several_patients_per_exam(table: pd.DataFrame, sources: list[str]) -> list[dict]:
    """The exams (AccessionNumber) whose images carry more than one patient id, each with its ids
    and where they came from (``sources``: one per table row).

    >>> t = pd.DataFrame({"AccessionNumber": ["A1", "A1", "A2"], "PatientID": ["P_L_CC", "P_L_MLO", "Q"],
    ...                   "image_id": ["A1/1", "A1/2", "A2/1"]})
    >>> [exam] = several_patients_per_exam(t, ["header PatientID"] * 3)
    >>> exam["AccessionNumber"], exam["patients"], exam["images"], exam["from"]
    ('A1', ['P_L_CC', 'P_L_MLO'], ['A1/1', 'A1/2'], ['header PatientID'])
    """
    if table.empty:
        return []
    frame = table[["AccessionNumber", "PatientID", "image_id"]].astype(str).assign(source=list(sources))
    counts = frame.groupby("AccessionNumber", sort=False)["PatientID"].nunique()
    split = frame[frame["AccessionNumber"].isin(counts.index[counts > 1])]
    return [
        {
            "AccessionNumber": accession,
            "patients": sorted(set(part["PatientID"])),
            "images": part["image_id"].tolist(),
            "from": sorted(set(part["source"])),
        }
        for accession, part in split.groupby("AccessionNumber", sort=False)
    ]


def warn_of_split_exams(exams: list[dict], num_exams: int, setting: str) -> None:
    """One WARNING line, before training, naming the first exams whose images carry several
    patient ids and how to say where the ids come from."""
    if not exams:
        return
    sources = sorted({s for e in exams for s in e["from"]})
    header = [s for s in sources if s.startswith("header")]
    shown = "; ".join(f"{e['AccessionNumber']}: {', '.join(e['patients'][:4])}" for e in exams[:EXAMPLES])
    more = " ..." if len(exams) > EXAMPLES else ""
    said = (
        f"the {header[0].removeprefix('header ')} of the file headers changes within an exam"
        if header
        else f"the patient ids ({', '.join(sources)}) differ within an exam"
    )
    log.warning(
        "data.patient_id=%s: %d of %d exams (AccessionNumber) hold images of several patients: %s "
        "(e.g. %s%s); a patient-grouped split can put one exam on both sides. If the ids are per "
        "image, set data.patient_id=accession, or data.patient_id=column with data.patient_column=<a "
        "label column of patient ids>; all in data_manifest.json (exams_with_several_patients)",
        setting,
        len(exams),
        num_exams,
        said,
        shown,
        more,
    )


def patient_ids_record(table: pd.DataFrame, source: PatientSource) -> tuple[dict, list[dict]]:
    """``data_manifest.json``'s ``patient_ids`` (the setting, and how many images took their id
    from where) and the exams whose images carry several ids, from a scanned table (with its
    ``patient_from`` column)."""
    sources = table["patient_from"].astype(str).tolist()
    counts = pd.Series(sources, dtype=str).value_counts()
    record = {"setting": source.setting, "from": {where: int(n) for where, n in counts.items()}}
    return record, several_patients_per_exam(table, sources)
