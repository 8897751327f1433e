"""Find files: each image's header checks and facts, its SHA-256, and the run's data manifest.

**The files.** Each image file of a label table: its header checked, its content hashed, its row filled in.

**The manifest.** ``data_manifest.json``: exactly which data a run used, so two runs can be compared.

The manifest lists every image (path relative to its root, size, SHA-256, accession, patient,
label, and the subgroups it belongs to: its scanner and the label file's subgroup columns, so a
comparison of two runs can be made per subgroup), the label CSV's hash, the label distribution
and every excluded or skipped row with its reason. It holds no absolute paths, dates or run
settings, so the same data in another folder or on another machine gives the same manifest and
the same ``manifest_sha256`` (in summary.json).

Hashing every DICOM is the costly part (~14 ms per 25 MB); :class:`HashIndex` remembers the
hashes by path, size and modification time in the experiment's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from mammo.artifacts.io import write_json
from mammo.core.errors import DataError
from mammo.data.images import check_header, not_a_mammogram
from mammo.data.settings import BadInput

log = logging.getLogger("mammo")

# -- the manifest and the hash index ------------------------------------------------------------------
MANIFEST_VERSION = 1
FILE_KEYS = ("image_id", "path", "size", "sha256", "AccessionNumber", "PatientID", "label")
"""The keys every file entry has; any other key of an entry names a subgroup it belongs to."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class HashIndex:
    """SHA-256 and header facts of files, remembered in ``index_file`` by (size, mtime_ns).

    Writes are atomic; two runs updating the index at once can lose each other's new entries,
    which only costs a re-hash later.
    """

    def __init__(self, index_file: str | Path | None) -> None:
        self.index_file = Path(index_file) if index_file else None
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.index_file and self.index_file.is_file():
            try:
                self.entries = json.loads(self.index_file.read_text())
            except (OSError, ValueError):
                self.entries = {}  # a damaged index only costs re-hashing

    def remember(self, path: str | Path, facts: dict, sha256: str) -> tuple[int, str]:
        """Record ``path``'s header facts and SHA-256 (read by ``mammo.data.scan``, in any
        process) while the file is unchanged; returns its (size, sha256)."""
        stat, entry = self._entry(path)
        entry["facts"], entry["sha256"] = facts, sha256
        self.changed = True
        return stat.st_size, sha256

    def known(self, path: str | Path, facts: tuple[str, ...] = ()) -> tuple[dict, tuple[int, str]] | None:
        """``(facts, (size, sha256))`` of an unchanged file whose hash and header ``facts`` are
        all remembered (an index written before a fact was read has to read the file again);
        ``None`` otherwise."""
        _, entry = self._entry(path)
        if entry.get("facts") is None or entry["sha256"] is None or not set(facts) <= entry["facts"].keys():
            return None
        return entry["facts"], (entry["size"], entry["sha256"])

    def _entry(self, path: str | Path):
        """The file's stat and its entry, a new one when the file's size or mtime changed."""
        stat = os.stat(path)
        key = os.path.abspath(path)  # not resolve(): one lstat per path component per file
        entry = self.entries.get(key)
        if not isinstance(entry, dict) or (entry["size"], entry["mtime_ns"]) != (
            stat.st_size,
            stat.st_mtime_ns,
        ):
            entry = self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": None}
        return stat, entry

    def save(self) -> None:
        if self.index_file and self.changed:
            write_json(self.index_file, self.entries)
            self.changed = False


def build_manifest(
    samples, class_labels: list[int], csv_files: dict[str, Path | None], subgroups: tuple[str, ...] = ()
) -> dict:
    """The manifest of a :class:`~mammo.data.labels.Samples` table (see module docstring); each
    file also gets the ``subgroups`` columns of the table that are not empty everywhere."""
    table: pd.DataFrame = samples.table
    labels = [class_labels[i] for i in table["label"]]
    kept = [c for c in subgroups if c in table and table[c].fillna("").astype(str).str.strip().any()]
    groups = table[kept].fillna("").astype(str).to_dict("records")
    files = [
        {
            "image_id": image_id,
            "path": relpath,
            "size": int(size),
            "sha256": sha,
            "AccessionNumber": acc,
            "PatientID": pid,
            "label": label,
            **group,
        }
        for image_id, relpath, size, sha, acc, pid, label, group in zip(
            table["image_id"],
            table["relpath"],
            table["size"],
            table["sha256"],
            table["AccessionNumber"],
            table["PatientID"],
            labels,
            groups,
        )
    ]
    counts = pd.Series(labels, dtype="int64").value_counts()
    return {
        "manifest_version": MANIFEST_VERSION,
        "label_files": {
            name: None if path is None else {"name": Path(path).name, "sha256": file_sha256(path)}
            for name, path in csv_files.items()
        },
        "class_labels": class_labels,
        "num_images": len(files),
        "num_accessions": int(table["AccessionNumber"].nunique()),
        "num_patients": int(table["PatientID"].nunique()),
        "label_distribution": {str(c): int(counts.get(c, 0)) for c in class_labels},
        "excluded": samples.excluded,
        "skipped": samples.skipped,
        "files": files,
        **({"duplicates": samples.duplicates} if samples.duplicates else {}),  # only where there are any
        **({"patient_ids": samples.patient_ids} if samples.patient_ids else {}),
        **({"readings": samples.readings} if samples.readings else {}),
        **(
            {"exams_with_several_patients": samples.exams_with_several_patients}
            if samples.exams_with_several_patients
            else {}
        ),
    }


def duplicate_groups(files: pd.DataFrame) -> list[dict]:
    """Files with identical content (SHA-256) under two patients or two labels: the same film can
    then sit on both sides of a patient-grouped split (every validation figure inflated) or teach
    two answers. One record per group: ``sha256``, ``images``, ``patients``, ``labels``.

    >>> t = pd.DataFrame({"image_id": ["a", "b", "c"], "sha256": ["x", "x", "y"],
    ...                   "PatientID": ["P1", "P2", "P3"], "label": [2, 3, 1]})
    >>> duplicate_groups(t)
    [{'sha256': 'x', 'images': ['a', 'b'], 'patients': ['P1', 'P2'], 'labels': [2, 3]}]
    """
    if files.empty or "sha256" not in files:
        return []
    groups, shared = [], files[files["sha256"].duplicated(keep=False)]  # only content seen twice
    for sha, part in shared.groupby("sha256", sort=True):
        if len(part) > 1 and (part["PatientID"].nunique() > 1 or part["label"].nunique() > 1):
            groups.append(
                {
                    "sha256": sha,
                    "images": [str(i) for i in part["image_id"]],
                    "patients": sorted({str(p) for p in part["PatientID"]}),
                    "labels": sorted({int(v) for v in part["label"]}),
                }
            )
    return groups


def manifest_sha256(manifest: dict) -> str:
    """Hash of the manifest's canonical JSON (sorted keys, no whitespace)."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def manifest_changes(old: dict, new: dict) -> str:
    """What differs between two manifests' images, in words (``""`` when nothing does): images
    added, removed, relabelled or with other content, each count with an example.

    >>> a = {"files": [{"image_id": "A/CC", "label": 2, "sha256": "x"}]}
    >>> manifest_changes(a, {"files": [{"image_id": "A/CC", "label": 3, "sha256": "x"}]})
    '1 relabelled (A/CC: 2 -> 3)'
    """
    before = {f["image_id"]: f for f in old.get("files", [])}
    after = {f["image_id"]: f for f in new.get("files", [])}
    shared = before.keys() & after.keys()
    kinds = {
        "added": [(i, "") for i in sorted(after.keys() - before.keys())],
        "removed": [(i, "") for i in sorted(before.keys() - after.keys())],
        "relabelled": [
            (i, f": {before[i].get('label')} -> {after[i].get('label')}")
            for i in sorted(shared)
            if before[i].get("label") != after[i].get("label")
        ],
        "with other content": [
            (i, "") for i in sorted(shared) if before[i].get("sha256") != after[i].get("sha256")
        ],
    }
    return ", ".join(f"{len(items)} {kind} ({example(items)})" for kind, items in kinds.items() if items)


def example(items: list[tuple[str, str]]) -> str:
    """The first of a list of changed images, as ``image: detail`` (``e.g.`` when there are more)."""
    name, detail = items[0]
    return f"{'e.g. ' if len(items) > 1 else ''}{name}{detail}"


# -- the files ----------------------------------------------------------------------------------------
SAMPLE_COLUMNS = [
    "image_id",
    "path",
    "relpath",
    "AccessionNumber",
    "PatientID",
    "laterality",
    "view",
    "size",
    "sha256",
    "label",
    "manufacturer",
    "model_name",
]
"""The columns of a sample table (``Samples.table``), in order."""
SCANNER_COLUMNS = ("manufacturer", "model_name")
"""The sample table's scanner columns (DICOM Manufacturer, ManufacturerModelName)."""
HEADER_FACTS = (
    "AccessionNumber",
    "PatientID",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "Modality",
    "Rows",
    "Columns",
    "Manufacturer",
    "ManufacturerModelName",
)
PARALLEL_FROM = 256
"""Files to read before the reading is spread over worker processes (starting them costs ~0.1 s)."""


def header_facts(path: Path, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """What the sample table takes from a file's header, once :func:`check_header` passed it
    (``extra``: other elements asked for, e.g. ``data.patient_id=header:<keyword>``'s)."""
    ds = check_header(path)
    return {key: str(ds.get(key, "") or "") for key in (*HEADER_FACTS, *extra)}


def scan_files(
    table: pd.DataFrame,
    frame: pd.DataFrame,
    root: Path,
    patients: PatientSource,
    laterality_column: str | None,
    view_column: str | None,
    bad: BadInput,
    hash_index,
    workers: int,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check each file's header and hash it; fill patient (where ``patients`` says; ``patient_from``
    says where), accession, laterality and view, and copy the label table's ``extra`` columns.
    ``hash_index`` remembers both per file by (size, mtime): a second run reads no file again."""
    if table.empty:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, *extra, "patient_from"])
    paths = table["path"].tolist()
    results = header_facts_and_hashes(paths, hash_index, workers, patients.header_tags())
    rows = frame.index.get_indexer(table["frame_row"])  # each file's label-table row
    wanted = (patients.column, laterality_column, view_column, "density", *extra)
    cells = {c: frame[c].tolist() for c in wanted if c and c in frame.columns}  # lists: fast to index

    def cell(column, row):
        return cells[column][row] if column in cells else ""

    out = []
    for path, acc_given, row, result in zip(paths, table["AccessionNumber"].tolist(), rows, results):
        relpath = relative_posix(path, root)
        if isinstance(result, DataError):
            bad(str(result), path=relpath)
            continue
        ds, (size, sha) = result  # the header facts (a dict), remembered across runs
        image_id = without_suffix(relpath)
        acc = acc_given or ds["AccessionNumber"] or image_id.rsplit("/", 1)[-1]
        patient, patient_from = patients.patient(cell(patients.column, row), ds, acc)
        problem = not_a_mammogram(ds)
        if problem or not patient:
            bad(f"{path}: {problem}" if problem else f"{relpath}: {patients.missing()}", path=relpath)
            continue
        laterality, view = cell(laterality_column, row), cell(view_column, row)
        out.append(
            {
                "image_id": image_id,
                "path": str(path),
                "relpath": relpath,
                "AccessionNumber": acc,
                "PatientID": patient,
                "laterality": (laterality or ds["ImageLaterality"] or ds["Laterality"]).upper(),
                "view": view or ds["ViewPosition"],
                "size": size,
                "sha256": sha,
                "label": int(cells["density"][row]),
                "manufacturer": ds["Manufacturer"].strip(),  # the subgroups a review reports
                "model_name": ds["ManufacturerModelName"].strip(),
                **{column: cell(column, row) for column in extra},
                "patient_from": patient_from,
            }
        )
    return pd.DataFrame(out, columns=[*SAMPLE_COLUMNS, *extra, "patient_from"])


def relative_posix(path, root: Path) -> str:
    """``path`` relative to ``root``, with ``/`` separators (string operations for the usual
    case of a normalised path below ``root``: no Path object per file)."""
    path, prefix = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    if path.startswith(prefix) and os.sep + "." not in path[len(prefix) - 1 :]:
        return path[len(prefix) :].replace(os.sep, "/")
    return Path(path).relative_to(root).as_posix()


def without_suffix(relpath: str) -> str:
    """``relpath`` without its file name's last suffix, as ``PurePath.with_suffix("")`` has it.

    >>> without_suffix("A1/CC.dcm"), without_suffix("A1/IMG"), without_suffix("A1/x.tar.gz")
    ('A1/CC', 'A1/IMG', 'A1/x.tar')
    """
    folder, _, name = relpath.rpartition("/")
    dot = name.rfind(".")
    stem = name[:dot] if 0 < dot < len(name) - 1 else name
    return f"{folder}/{stem}" if folder else stem


def header_facts_and_hashes(paths: list, hash_index, workers: int, extra: tuple[str, ...] = ()) -> list:
    """Per path ``(header facts, (size, sha256))``, or the :class:`DataError` of a bad file;
    files ``hash_index`` knows unchanged (with the ``extra`` header elements) are not read, the
    others are read in ``workers`` processes (:func:`read_files`)."""
    results = [hash_index.known(path, (*HEADER_FACTS, *extra)) for path in paths]
    unknown = [i for i, known in enumerate(results) if known is None]
    for i, read in zip(unknown, read_files([paths[i] for i in unknown], workers, extra)):
        results[i] = read if isinstance(read, DataError) else (read[0], hash_index.remember(paths[i], *read))
    hash_index.save()
    return results


def read_file(path, extra: tuple[str, ...] = ()) -> tuple[dict, str] | DataError:
    """A file's header facts (with the ``extra`` elements) and SHA-256, or the :class:`DataError`
    of a bad file (returned, not raised, so that it crosses from a worker process as a value)."""
    try:
        facts = header_facts(path, extra)
    except DataError as exc:
        return exc
    return facts, file_sha256(path)


def read_files(paths: list, workers: int, extra: tuple[str, ...] = ()) -> list:
    """:func:`read_file` of each path, in order: in ``workers`` forked processes when there are
    many. pydicom parses headers in pure Python, so threads would only take turns holding the GIL
    (measured: 2 threads were 2.5x slower than one loop; 2 processes 1.7x faster)."""
    if workers <= 1 or len(paths) < PARALLEL_FROM or not can_fork_workers():
        return [read_file(path, extra) for path in paths]
    chunk = max(1, min(64, len(paths) // (4 * workers)))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(partial(read_file, extra=extra), paths, chunksize=chunk))


def can_fork_workers() -> bool:
    """Whether this process may start forked workers (a daemonic one, e.g. a DataLoader worker,
    may have no children)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


# -- patient ids ----------------------------------------------------------------------------------
KINDS = ("auto", "column", "header", "accession")
EXAMPLES = 3
"""Exams named in the warning (all are in the manifest)."""


@dataclass(frozen=True)
class PatientSource:
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
