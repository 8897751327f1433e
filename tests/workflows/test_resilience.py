"""Interruption, resume, divergence: signals sent to real training processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_DEMO, TINY, fill, missing_component, run_cli
from tests.test_cli import cli

SETPRIV_HINT = "apt-get install util-linux (its setpriv runs the test as an unprivileged user)"

ARGS = [*TINY, *SMALL_DEMO, "seed=5"]


def history_epochs(run) -> int:
    try:
        return len(json.loads((run / "train_history.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def start_and_signal(tmp_path, demo_root, sig, epochs: int, after: int = 2, extra=(), startup=False, **popen):
    """Start a training subprocess; send ``sig`` once ``after`` epochs are in its history (or,
    with ``startup``, as soon as run.log says it is loading data)."""
    from mammo.data.demo import ensure_demo_dataset

    ensure_demo_dataset(demo_root, 24, 0, 160, 128)
    proc = cli(
        *ARGS,
        *extra,
        f"epochs={epochs}",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
        **popen,
    )
    run = tmp_path / "mammo_tiny_density" / "results_1"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if startup and "Loading data from" in _read(run / "run.log"):
            break
        if not startup and history_epochs(run) >= after:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, run, err


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "startup", "popen"),
    [
        (signal.SIGINT, False, {}),
        (signal.SIGTERM, False, {}),
        # started as a background job of a script is (SIGINT ignored): Ctrl-C must still stop it
        (signal.SIGINT, False, {"preexec_fn": _ignore_sigint}),
        (signal.SIGINT, True, {"preexec_fn": _ignore_sigint}),  # while loading data
    ],
    ids=["sigint", "sigterm", "sigint-inherited-ignored", "sigint-at-startup"],
)
def test_interrupt_records_the_run_as_interrupted(tmp_path, demo_root, sig, startup, popen):
    code, run, err = start_and_signal(tmp_path, demo_root, sig, epochs=60, startup=startup, **popen)
    assert code == 1, err[-3000:]  # as any failed run (README)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Interrupted")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert "Run interrupted" in (run / "run.log").read_text()
    if not startup:
        assert summary["epochs_completed"] >= 2 and f"resume={run}" in summary["error"]["message"]
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "best_model.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "extra"),
    [
        # the disk cache as users run it (batches read in the training process), and loader
        # workers (persistent across epochs) decoding each batch without a cache
        (signal.SIGTERM, ["data.num_workers=2", "data.cache_mode=disk"]),
        (signal.SIGKILL, ["data.num_workers=2", "data.cache_mode=none"]),
    ],
)
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, demo_root, sig, extra):
    from mammo.train import main

    epochs = 6
    code, run, _ = start_and_signal(tmp_path / "cut", demo_root, sig, epochs=epochs, extra=extra)
    assert code != 0
    if sig == signal.SIGKILL:  # it could record nothing: mammo.runs tells from its pid
        from mammo.artifacts.run_index import find_runs

        assert [r["status"] for r in find_runs(run.parent)] == ["dead"]
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


@pytest.mark.parametrize("name", ["nothing", "results_50"])
def test_resume_of_a_mistyped_directory_creates_nothing(tmp_path, demo_root, capsys, name):
    from mammo.train import main

    out = tmp_path / "outputs"
    target = tmp_path / name if name == "nothing" else name
    assert run_cli(main, [*ARGS, f"resume={target}", f"paths.output_dir={out}"]) == 1
    err = capsys.readouterr().err
    assert f"resume={target}: not a mammo run directory" in err and "Traceback" not in err
    assert not (tmp_path / "nothing").exists() and not out.exists()
    # and the next run is results_1, not the number after the mistyped one
    assert run_cli(main, [*ARGS, "epochs=1", f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]) == 0
    assert [p.name for p in (out / "mammo_tiny_density").glob("results_*")] == ["results_1"]


def test_nan_loss_stops_the_run_with_a_reason(tmp_path, demo_root, tests_trusted):
    from mammo.train import main

    args = [
        *ARGS,
        "epochs=2",
        "+callbacks.inject_nan._target_=tests.callbacks.InjectNaN",  # a test-only callback, by config
        "+callbacks.inject_nan.step=3",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 1
    summary = json.loads(next(tmp_path.glob("mammo_tiny_density/results_*/summary.json")).read_text())
    assert summary["status"] == "failed" and summary["error"]["type"] == "TrainingError"
    assert "training loss is nan at epoch 1, batch 3" in summary["error"]["message"]


@pytest.mark.slow
def test_a_full_disk_keeps_the_resume_point(small_disk, demo_root):
    import torch

    from mammo.data.demo import ensure_demo_dataset
    from mammo.train import main

    ensure_demo_dataset(demo_root, 24, 0, 160, 128)
    epochs = 10  # the disk is filled after epoch 2
    proc = cli(*ARGS, f"epochs={epochs}", f"paths.output_dir={small_disk}", f"paths.demo_dir={demo_root}")
    run = small_disk / "mammo_tiny_density" / "results_1"
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while (
        proc.poll() is None
        and not (history_epochs(run) >= 2 and last.is_file())
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the disk could be filled"
    fill(small_disk)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err
    full = [line for line in err.splitlines() if "No space left on device" in line]
    assert full and str(small_disk) in full[-1], err  # one line naming the path that could not be written
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" or "is not recorded in summary.json" in out
    saved = torch.load(last, weights_only=False)  # the resume point is whole
    assert 1 <= saved["epoch"] + 1 < epochs
    assert not list(run.rglob(".*.tmp"))  # no temporary file left behind
    (small_disk / "filler").unlink()
    assert run_cli(main, [f"resume={run}"]) == 0
    history = json.loads((run / "train_history.json").read_text())
    assert history["epoch"] == list(range(1, epochs + 1))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_a_read_only_output_folder_is_one_line(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="mammo-ro-"))  # outside pytest's private tmp folders
    try:
        base.chmod(0o755)
        outputs = base / "outputs"
        outputs.mkdir(mode=0o555)
        outputs.chmod(0o555)
        command = [sys.executable, "-m", "mammo.train", *ARGS, f"paths.output_dir={outputs}"]
        if os.geteuid() == 0:  # root writes anywhere: run as an unprivileged user
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            probe = subprocess.run(
                [*drop, sys.executable, "-c", "import mammo.train"], cwd=REPO, capture_output=True
            )
            if shutil.which("setpriv") is None:
                missing_component("setpriv", SETPRIV_HINT)
            if probe.returncode != 0:  # where the checkout lies, not a missing component
                pytest.skip(f"an unprivileged user cannot read this checkout ({REPO}): clone it elsewhere")
            command = [*drop, *command]
        proc = subprocess.run(command, cwd=base, capture_output=True, text=True, timeout=120, env=_env())
        assert proc.returncode == 1
        experiment = outputs / "mammo_tiny_density"
        assert proc.stderr.strip() == (
            f"paths.output_dir: cannot create a run directory in {experiment}: Permission denied"
        )
        assert not any(outputs.iterdir())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_read_only_file_system_is_one_line(tmp_path, capsys):
    """The same for everyone, root included: outputs/ on a file system mounted read-only."""
    from mammo.train import main

    outputs = tmp_path / "outputs"
    (outputs / "mammo_tiny_density").mkdir(parents=True)
    bind = subprocess.run(["mount", "--bind", str(outputs), str(outputs)], capture_output=True)
    if bind.returncode != 0:
        missing_component("a read-only bind mount (mount rights: root)", bind.stderr.decode().strip())
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(outputs)], check=True)
        assert run_cli(main, [*ARGS, f"paths.output_dir={outputs}"]) == 1
        err = capsys.readouterr().err
        experiment = outputs / "mammo_tiny_density"
        assert (
            err.strip()
            == f"paths.output_dir: cannot create a run directory in {experiment}: Read-only file system"
        )
        assert not any(experiment.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(outputs)], check=False)


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)}


def test_a_run_failing_at_its_split_keeps_its_data_record(tmp_path):
    from mammo.train import main
    from tests.data.conftest import make_dataset

    csv, root = make_dataset(tmp_path / "data")
    (root / "ACC001" / "L_CC.dcm").write_bytes(b"\0" * 50)  # skipped
    split = tmp_path / "split.csv"  # a val side without density 4
    split.write_text(
        "PatientID,split\n" + "".join(f"PAT{p:03d},{'val' if p < 3 else 'train'}\n" for p in range(20))
    )
    args = [
        *[a for a in TINY if not a.startswith("data.")],
        "data=dicom_csv",
        f"data.csv={csv}",
        f"data.dicom_root={root}",
        f"data.split_csv={split}",
        "data.on_bad_file=skip",
        "data.num_workers=0",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    assert run_cli(main, args) == 1
    (run,) = (tmp_path / "out" / "mammo_tiny_density").glob("results_*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "has no image of density [4]" in summary["error"]["message"]
    assert summary["data_config"]["skipped"] == 1 and summary["data_config"]["num_images"] == 39
    manifest = json.loads((run / "data_manifest.json").read_text())
    assert manifest["num_images"] == 39 and "ACC001/L_CC.dcm" in manifest["skipped"][0]["path"]


def test_fast_dev_run_says_no_model_was_saved(tmp_path, demo_root):
    from mammo.train import main

    args = [*ARGS, "debug=fast_dev_run", f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, args) == 0
    (run,) = (tmp_path / "mammo_tiny_density").glob("results_*")
    log = (run / "run.log").read_text()
    assert "Model saved to" not in log and "No model saved: trainer.fast_dev_run" in log
    assert not (run / "best_model.pt").exists()
    assert json.loads((run / "summary.json").read_text())["artifacts"]["best_model"] is None
