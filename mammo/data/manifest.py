"""``data_manifest.json``: exactly which data a run used, so two runs can be compared.

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
import os
from pathlib import Path

import pandas as pd

from mammo.artifacts.io import write_json

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
    }


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
