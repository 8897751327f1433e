"""Each image file of a label table: its header checked, its content hashed, its row filled in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from mammo.data.dicom import check_header
from mammo.data.tables import BadInput
from mammo.errors import DataError

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
]
"""The columns of a sample table (``Samples.table``), in order."""
HEADER_FACTS = ("AccessionNumber", "PatientID", "ImageLaterality", "Laterality", "ViewPosition")


def header_facts(path: Path) -> dict[str, str]:
    """What the sample table takes from a file's header, once :func:`check_header` passed it."""
    ds = check_header(path)
    return {key: str(ds.get(key, "") or "") for key in HEADER_FACTS}


def scan_files(
    table: pd.DataFrame,
    frame: pd.DataFrame,
    root: Path,
    patient_column: str,
    laterality_column: str | None,
    view_column: str | None,
    bad: BadInput,
    hash_index,
    workers: int,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Check each file's header and hash it; fill patient, accession, laterality and view (and
    copy the ``extra`` columns of the label table). ``hash_index`` remembers both per file by
    (size, mtime), so a second run over the same files reads none of them."""
    if table.empty:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, *extra, "frame_row"])

    results = header_facts_and_hashes(table["path"].tolist(), hash_index, workers)
    sources = frame.to_dict("index")  # label-table row -> its cells
    out = []
    for item, result in zip(table.to_dict("records"), results):
        relpath = Path(item["path"]).relative_to(root).as_posix()
        if isinstance(result, DataError):
            bad(str(result), path=relpath)
            continue
        ds, (size, sha) = result  # the header facts (a dict), remembered across runs
        source = sources[item["frame_row"]]
        acc = item["AccessionNumber"] or ds["AccessionNumber"] or Path(relpath).stem
        patient = source.get(patient_column, "") if patient_column else ""
        laterality = source.get(laterality_column, "") if laterality_column else ""
        view = source.get(view_column, "") if view_column else ""
        out.append(
            {
                "image_id": str(Path(relpath).with_suffix("").as_posix()),
                "path": str(item["path"]),
                "relpath": relpath,
                "AccessionNumber": acc,
                "PatientID": patient or ds["PatientID"] or acc,
                "laterality": (laterality or ds["ImageLaterality"] or ds["Laterality"]).upper(),
                "view": view or ds["ViewPosition"],
                "size": size,
                "sha256": sha,
                "label": int(source["density"]),
                **{column: source.get(column, "") for column in extra},
            }
        )
    return pd.DataFrame(out, columns=[*SAMPLE_COLUMNS, *extra])


def header_facts_and_hashes(paths: list, hash_index, workers: int) -> list:
    """Per path ``(header facts, (size, sha256))``, or the :class:`DataError` of a bad file;
    files ``hash_index`` knows unchanged are not read, the others are read in ``workers`` threads."""

    def scan(path):
        try:
            facts = hash_index.facts(path, header_facts)
        except DataError as exc:
            return exc
        return facts, hash_index.sha256(path)

    results = [hash_index.known(path) for path in paths]
    unknown = [i for i, known in enumerate(results) if known is None]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, result in zip(unknown, pool.map(scan, [paths[i] for i in unknown])):
            results[i] = result
    hash_index.save()
    return results
