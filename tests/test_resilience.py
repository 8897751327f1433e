"""Interruption, resume, divergence: signals sent to real training processes."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import SMALL_DEMO, TINY, run_cli
from tests.test_cli import cli

ARGS = [*TINY, *SMALL_DEMO, "seed=5"]


def history_epochs(run) -> int:
    try:
        return len(json.loads((run / "train_history.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def start_and_signal(tmp_path, demo_root, sig, epochs: int, after: int = 2, extra=()):
    """Start a training subprocess; send ``sig`` once ``after`` epochs are in its history."""
    from mammo.data.demo import ensure_demo_dataset

    ensure_demo_dataset(demo_root, 24, 0, 160, 128)
    proc = cli(
        *ARGS, *extra, f"epochs={epochs}", f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"
    )
    run = tmp_path / "mammo_tiny_density" / "results_1"
    deadline = time.monotonic() + 300
    while history_epochs(run) < after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, run, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_records_the_run_as_interrupted(tmp_path, demo_root, sig):
    code, run, err = start_and_signal(tmp_path, demo_root, sig, epochs=60)
    assert code != 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 2
    assert f"resume={run}" in summary["error"]["message"]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "best_model.pt").is_file()
    assert "Run interrupted" in (run / "run.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "extra"),
    [
        # loader workers (persistent across epochs) and the disk cache, as users run it
        (signal.SIGTERM, ["data.num_workers=2", "data.cache_mode=disk"]),
        (signal.SIGKILL, ["data.num_workers=2"]),
    ],
)
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, demo_root, sig, extra):
    from mammo.train import main

    epochs = 6
    code, run, _ = start_and_signal(tmp_path / "cut", demo_root, sig, epochs=epochs, extra=extra)
    assert code != 0
    assert run_cli(main, [f"resume={run}"]) == 0
    full = tmp_path / "full"
    args = [*ARGS, *extra, f"epochs={epochs}", f"paths.output_dir={full}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, args) == 0
    reference = full / "mammo_tiny_density" / "results_1"
    assert (run / "val_predictions.csv").read_bytes() == (reference / "val_predictions.csv").read_bytes()
    history = json.loads((run / "train_history.json").read_text())
    assert history["epoch"] == list(range(1, epochs + 1))
    assert history == json.loads((reference / "train_history.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["execution"]["resumed_at"]) == 1
    log = (run / "run.log").read_text()
    assert log.count("Starting density classification training") == 2 and "Resuming from" in log
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra_resume").is_dir()


def test_resume_needs_a_run_directory(tmp_path):
    from mammo.train import main

    assert run_cli(main, [f"resume={tmp_path / 'nothing'}"]) == 1


def test_nan_loss_stops_the_run_with_a_reason(tmp_path, demo_root):
    from mammo.train import main

    args = [
        *ARGS,
        "epochs=2",
        "+inject_nan_at_step=3",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 1
    summary = json.loads(next(tmp_path.glob("mammo_tiny_density/results_*/summary.json")).read_text())
    assert summary["status"] == "failed" and summary["error"]["type"] == "TrainingError"
    assert "training loss is nan at epoch 1, batch 3" in summary["error"]["message"]
