"""``logger=wandb``: an offline run read back from W&B's own transaction log (``run-<id>.wandb``)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL_DEMO, TINY, console_of, last_line

pytest.importorskip("wandb", reason="W&B is an optional extra: pip install -e '.[wandb]'")


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log chunks in
    32 KiB blocks (crc32, length, type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, records, pending = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768  # a block's tail too short for a chunk header
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def offline_run(run_dir: Path) -> dict:
    """What W&B recorded of an offline run: its run record, config, summary, history keys."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out = {"config": {}, "summary": {}, "history": set(), "folder": log.parent}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            out["summary"].update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
        elif kind == "history":
            out["history"].update(i.key or "/".join(i.nested_key) for i in record.history.item)
    return out


def train(tmp_path, demo_root, monkeypatch, *extra):
    from mammo.train import main

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))  # no wandb login on this machine
    args = [
        *TINY,
        *SMALL_DEMO,
        "logger=wandb",
        "epochs=2",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
    ]
    return console_of(main, [*args, *extra])


def test_a_run_without_an_api_key_is_kept_offline_with_its_config_metrics_and_plots(
    tmp_path, demo_root, monkeypatch
):
    code, console = train(tmp_path, demo_root, monkeypatch)
    assert code == 0
    run = tmp_path / "mammo_tiny_density" / "results_1"
    recorded = offline_run(run)
    assert (recorded["run"].display_name, recorded["run"].project) == ("results_1", "mammo_tiny_density")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["integration"]["wandb_run_id"] == recorded["run"].run_id
    assert recorded["config"]["seed"] == 42 and recorded["config"]["model"]["backbone"] == "test_efficientnet"
    assert recorded["summary"]["best_val_kappa"] == pytest.approx(summary["best_val_kappa"])
    assert recorded["summary"]["mammo_status"] == "completed"
    assert {"val_kappa", "train_loss"} <= recorded["history"]
    images = {p.name.split("_")[0] for p in (recorded["folder"] / "files/media/images/plots").glob("*.png")}
    assert {"confusion", "train", "reliability"} <= images
    said = f"W&B: no API key (WANDB_API_KEY or wandb login): the run is kept offline in {run / 'wandb'}"
    assert said in console and "wandb sync" in console
    assert last_line(console).startswith(f"Run: {run} | next: ")  # the run's own line stays last
    # W&B puts its own hook in sys.excepthook: a later error must still be mammo's one line
    assert sys.excepthook.__module__ == "mammo.core.errors"


def test_the_api_key_is_never_written_or_printed(tmp_path, demo_root, monkeypatch):
    secret = "wandb-key-0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    from mammo.train import main

    args = [*TINY, *SMALL_DEMO, "logger=wandb", "logger.wandb.mode=offline", "epochs=1"]
    code, console = console_of(main, [*args, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"])
    assert code == 0 and secret not in console
    written = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert written == []
