"""The data layer seen from a training run: manifest, disk cache repair and skipped files in the
run directory's artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from mammo.data.cache import DiskCache, entry_name
from mammo.data.images import Preprocessing
from mammo.data.scan import manifest_sha256
from tests.cache_files import flip_payload_byte, last_in_its_shard, truncate
from tests.conftest import TINY, run_cli, train_tiny


def test_disk_cache_repair_and_manifest_in_run_artifacts(tmp_path, demo_root):
    first = train_tiny(tmp_path, demo_root, "epochs=1", "data.cache_mode=disk")
    summary = json.loads((first / "summary.json").read_text())
    manifest = json.loads((first / "data_manifest.json").read_text())
    data = summary["data_config"]
    assert data["manifest_sha256"] == manifest_sha256(manifest)
    assert manifest["num_images"] == data["num_train"] + data["num_val"]
    assert data["cache"]["built"] == manifest["num_images"] and data["preprocessing"]["crop"] is True

    keys = [entry_name(f["AccessionNumber"], f["image_id"], f["sha256"]) for f in manifest["files"]]
    cut = last_in_its_shard(run_cache(first), keys)
    truncate(run_cache(first), cut)  # the shard ends inside its last entry (a crash, a full disk)
    second = train_tiny(tmp_path, demo_root, "epochs=1", "data.cache_mode=disk")
    log = (second / "run.log").read_text()
    assert "] WARNING: Disk cache truncation detected for 1 samples - regenerating" in log
    assert "Cache rebuild complete (took" in log
    again = json.loads((second / "summary.json").read_text())["data_config"]
    assert again["cache"]["regenerated"] == 1 and again["cache"]["reused"] == manifest["num_images"] - 1
    assert again["manifest_sha256"] == data["manifest_sha256"]
    assert again["cache"]["rebuilt_on_read"] == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(first / "val_predictions.csv"), pd.read_csv(second / "val_predictions.csv")
    )
    flip_payload_byte(run_cache(second), cut)  # good size and header, wrong CRC: found when read
    third = train_tiny(tmp_path, demo_root, "epochs=1", "data.cache_mode=disk")
    cache = json.loads((third / "summary.json").read_text())["data_config"]["cache"]
    assert cache["regenerated"] == 0 and cache["rebuilt_on_read"] == 1
    assert "checksum mismatch (corrupt)) - regenerating" in (third / "run.log").read_text()


def run_cache(run: Path) -> DiskCache:
    """The disk cache a run used (its preprocessing settings, its experiment's cache folder)."""
    summary = json.loads((run / "summary.json").read_text())
    settings = {k: v for k, v in summary["data_config"]["preprocessing"].items() if k != "pipeline_version"}
    cache = DiskCache(run.parent / "cache", Preprocessing(**settings))
    assert str(cache.folder) == summary["data_config"]["cache"]["folder"]
    return cache


def demo_copy(tmp_path, demo_root):
    """A private copy of the small demo set (accession folders), safe to damage."""
    from mammo.data.demo import ensure_demo_dataset

    copy = tmp_path / "data"
    shutil.copytree(ensure_demo_dataset(demo_root, n_patients=24, seed=0, height=160, width=128), copy)
    return copy


def train_on(copy, tmp_path, *overrides) -> tuple[int, Path]:
    """Train the tiny model on ``copy`` with ``data=dicom_csv``; returns (exit code, run dir)."""
    from mammo.train import main

    args = [
        *TINY,
        "epochs=1",
        "data=dicom_csv",
        f"data.csv={copy / 'classificacao.csv'}",
        f"data.dicom_root={copy / 'archive'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        *overrides,
    ]
    code = run_cli(main, args)
    return code, next((tmp_path / "outputs" / "mammo_tiny_density").glob("results_*"))


def test_skipped_files_are_counted_in_run_log_and_summary(tmp_path, demo_root):
    copy = demo_copy(tmp_path, demo_root)
    bad = sorted((copy / "archive").rglob("*.dcm"))[:2]
    for path in bad:
        path.write_bytes(b"broken")
    code, run = train_on(copy, tmp_path, "data.on_bad_file=skip", "data.cache_mode=none")
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_config"]["skipped"] == 2
    log = (run / "run.log").read_text()
    assert "WARNING: Skipped 2 bad file(s)/row(s)" in log
    manifest = json.loads((run / "data_manifest.json").read_text())
    assert sorted(s["path"] for s in manifest["skipped"]) == sorted(
        p.relative_to(copy / "archive").as_posix() for p in bad
    )


def test_undecodable_file_read_by_a_worker_fails_with_one_line(tmp_path, demo_root):
    """With cache_mode=none, pixels are first decoded in a DataLoader worker; the error that comes
    back still names the file in one line, and the run is marked failed."""
    import pydicom
    from pydicom.uid import RLELossless

    copy = demo_copy(tmp_path, demo_root)
    path = sorted((copy / "archive").rglob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless, encoding_plugin="")
    data = bytearray(ds.PixelData)
    data[16:24] = (7).to_bytes(4, "little") + (0xFFFFFF).to_bytes(4, "little")  # RLE header: bad offsets
    ds.PixelData = bytes(data)
    ds.save_as(path)
    code, run = train_on(copy, tmp_path, "data.cache_mode=none", "data.num_workers=2")
    assert code == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    message = summary["error"]["message"]
    assert message.startswith(str(path)) and "cannot decode DICOM pixels" in message and "\n" not in message
