"""A Ctrl-C whose ``KeyboardInterrupt`` is lost (in a finalizer, or to a bare ``except:``) still stops
training: at the next clean point, recorded as interrupted."""

from __future__ import annotations

import json
import signal

import pytest

from mammo.core import interrupts
from mammo.data import datamodule
from mammo.models.classifier import DensityClassifier
from tests.conftest import SMALL_DEMO, TINY, run_cli


@pytest.fixture(autouse=True)
def _sigint_handler():
    saved = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, saved)


def ctrl_c_swallowed() -> None:
    """SIGINT to this process, its exception caught as a careless library would."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass


class SendsCtrlCWhenCollected:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # Python can only print the KeyboardInterrupt raised here


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost one, printed
def test_a_ctrl_c_lost_in_a_finalizer_is_still_requested():
    interrupts.install()
    interrupts.raise_if_requested()  # nothing pending after install
    SendsCtrlCWhenCollected()  # collected at once: its KeyboardInterrupt goes nowhere
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_requested()
    interrupts.install()
    interrupts.raise_if_requested()  # a new run starts with none pending


def train(tmp_path, demo_root):
    from mammo.train import main

    args = [*TINY, *SMALL_DEMO, "epochs=30", f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    code = run_cli(main, args)
    run = tmp_path / "mammo_tiny_density" / "results_1"
    return code, run, json.loads((run / "summary.json").read_text())


@pytest.mark.slow
def test_a_ctrl_c_swallowed_while_reading_the_data_stops_the_run(tmp_path, demo_root, monkeypatch):
    load_samples = datamodule.load_samples

    def swallowing(*args, **kwargs):
        ctrl_c_swallowed()
        return load_samples(*args, **kwargs)

    monkeypatch.setattr(datamodule, "load_samples", swallowing)
    code, run, summary = train(tmp_path, demo_root)
    assert code == 1 and summary["status"] == "interrupted"
    assert not (run / "train_history.json").exists()  # stopped before the model was built
    assert "Run interrupted" in (run / "run.log").read_text()


@pytest.mark.slow
def test_a_ctrl_c_swallowed_in_a_training_step_stops_at_the_next_batch(tmp_path, demo_root, monkeypatch):
    training_step = DensityClassifier.training_step

    def swallowing(self, batch, batch_idx):
        if self.current_epoch == 2 and batch_idx == 0:
            ctrl_c_swallowed()
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(DensityClassifier, "training_step", swallowing)
    code, run, summary = train(tmp_path, demo_root)
    assert code == 1 and summary["status"] == "interrupted"
    assert summary["epochs_completed"] == 2 and f"resume={run}" in summary["error"]["message"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
