"""data_manifest.json: the same data gives the same hash wherever it lives; any change shows."""

from __future__ import annotations

import shutil

from mammo.data.scan import HashIndex, file_sha256, manifest_sha256


def test_same_data_elsewhere_same_hash_and_changes_show(dataset, make_datamodule, tmp_path):
    csv, root = dataset
    first = make_datamodule(csv, root)
    manifest = first.manifest
    assert manifest["num_images"] == 40 and manifest["num_patients"] == 20
    assert manifest["label_distribution"] == {"1": 10, "2": 10, "3": 10, "4": 10}
    assert manifest["label_files"]["csv"] == {"name": "labels.csv", "sha256": file_sha256(csv)}
    entry = manifest["files"][0]
    assert entry["path"] == "ACC000/L_CC.dcm" and entry["size"] == (root / entry["path"]).stat().st_size
    assert entry["sha256"] == file_sha256(root / entry["path"])
    assert first.describe()["manifest_sha256"] == manifest_sha256(manifest)

    copy = tmp_path / "copy"
    shutil.copytree(csv.parent, copy)
    moved = make_datamodule(copy / "labels.csv", copy / "archive", split_seed=7)
    assert manifest_sha256(moved.manifest) == manifest_sha256(manifest)  # another folder, another split

    path = copy / "archive" / "ACC003" / "R_CC.dcm"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    changed = make_datamodule(copy / "labels.csv", copy / "archive")
    assert manifest_sha256(changed.manifest) != manifest_sha256(manifest)


def test_hash_index_remembers_and_notices_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    index = HashIndex(tmp_path / "index.json")
    assert index.known(path) is None
    digest = file_sha256(path)
    assert index.remember(path, {"PatientID": "P1"}, digest) == (3, digest)
    index.save()
    again = HashIndex(tmp_path / "index.json")
    assert again.known(path) == ({"PatientID": "P1"}, (3, digest)) and not again.changed
    path.write_bytes(b"abcd")
    assert again.known(path) is None  # another size: read and hashed again


def test_a_second_run_over_the_same_files_reads_no_header(dataset, make_datamodule, monkeypatch):
    import os

    import mammo.data.scan

    reads = []
    real = mammo.data.scan.check_header
    monkeypatch.setattr(mammo.data.scan, "check_header", lambda path: reads.append(path) or real(path))
    first = make_datamodule(*dataset)
    assert len(reads) == len(first.samples.table)
    reads.clear()
    second = make_datamodule(*dataset)
    assert reads == [] and second.samples.table.equals(first.samples.table)
    touched = first.samples.table["path"].iloc[0]
    os.utime(touched, ns=(1, 1))  # a changed file (mtime) is read again, and only that one
    third = make_datamodule(*dataset)
    assert [str(p) for p in reads] == [touched] and third.samples.table.equals(first.samples.table)


def test_headers_read_in_worker_processes_equal_one_loop(dataset, monkeypatch, tmp_path):
    import mammo.data.scan as scan
    from mammo.core.errors import DataError

    junk = tmp_path / "junk.dcm"
    junk.write_text("not a DICOM")
    files = sorted(dataset[1].rglob("*.dcm"))
    paths = [*files[:10], junk, *files[10:]]
    one = scan.read_files(paths, workers=1)
    pools = []
    real_pool = scan.ProcessPoolExecutor
    monkeypatch.setattr(scan, "ProcessPoolExecutor", lambda *a, **k: pools.append(k) or real_pool(*a, **k))
    monkeypatch.setattr(scan, "PARALLEL_FROM", 4)
    many = scan.read_files(paths, workers=2)
    assert len(pools) == 1  # spread over worker processes
    assert [r for r in many if not isinstance(r, DataError)] == [
        r for r in one if not isinstance(r, DataError)
    ]
    assert isinstance(many[10], DataError) and str(many[10]) == str(one[10])
    assert "not a readable DICOM" in str(many[10])
