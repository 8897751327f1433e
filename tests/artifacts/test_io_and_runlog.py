"""Atomic writes and the run.log format."""

from __future__ import annotations

import json
import logging

import pytest

from mammo.artifacts.io import write_json
from mammo.artifacts.runlog import ConsoleFilter, RunLogFormatter


def test_write_json_replaces_atomically_and_maps_nan_to_null(tmp_path):
    path = tmp_path / "s.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": float("nan"), "b": [float("inf"), 2.0]})
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 2.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp files left


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "s.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def record(level, msg, **extra):
    rec = logging.LogRecord("mammo", level, "", 0, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_formatter_matches_spec():
    line = RunLogFormatter().format(record(logging.INFO, "Epoch 1/20"))
    assert line[0] == "[" and line[20:] == "] Epoch 1/20" and len(line[1:20]) == 19
    assert RunLogFormatter().format(record(logging.WARNING, "x")).endswith("] WARNING: x")
    assert RunLogFormatter().format(record(logging.ERROR, "y")).endswith("] ERROR: y")


def test_console_filter():
    f = ConsoleFilter()
    assert f.filter(record(logging.INFO, "hello"))
    assert not f.filter(record(logging.ERROR, "trace", file_only=True))
    assert not f.filter(record(logging.INFO, "💡 Tip: buy things"))


def test_the_run_end_reaches_every_tracker_even_when_one_fails(tmp_path, caplog):
    from mammo.artifacts.summary import RunSummary

    seen = []

    def unreachable_server(data):
        raise ConnectionError("tracking server down")

    summary = RunSummary(tmp_path / "summary.json", "density_classification", "results_1", 42)
    summary.when_finished(unreachable_server)
    summary.when_finished(lambda data: seen.append(data["status"]))
    summary.finish("interrupted", error={"type": "KeyboardInterrupt", "message": ""})
    assert seen == ["interrupted"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
    assert "Could not record the run's end in" in caplog.text and "tracking server down" in caplog.text
