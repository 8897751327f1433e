"""The training job as a task function: compose the config, call mammo.workflows.training_job.train."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from mammo import CONFIG_DIR
from mammo.core.errors import ConfigError
from mammo.workflows.training_job import train
from tests.conftest import SMALL_DEMO, TINY


def job_config(tmp_path, demo_root, name: str, *overrides: str):
    """The composed ``mammo.train`` config of a tiny run into ``tmp_path/name`` (no Hydra runtime:
    the job reads its directory from ``paths.run_dir``)."""
    args = [*TINY, *SMALL_DEMO, "epochs=2", "gradcam_per_class=0", f"paths.demo_dir={demo_root}"]
    args += [f"paths.output_dir={tmp_path}", f"paths.run_dir={tmp_path / name}", *overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", args)


def test_the_task_function_trains_and_returns_the_monitored_metric(tmp_path, demo_root):
    value = train(job_config(tmp_path, demo_root, "a", "optimizer=sgd", "scheduler=constant"))
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "completed" and value == summary["best_val_kappa"]
    assert summary["hyperparameters"]["optimizer"] == "sgd"
    assert summary["hyperparameters"]["scheduler"] == "constant"
    assert summary["epochs_completed"] == 2
    history = pd.read_csv(tmp_path / "a" / "train_history.csv")
    assert history["lr"].tolist() == [3e-3, 3e-3]  # constant: the learning rate as set


def test_same_config_and_seed_give_the_same_predictions_and_another_seed_others(tmp_path, demo_root):
    train(job_config(tmp_path, demo_root, "a", "seed=7"))
    train(job_config(tmp_path, demo_root, "b", "seed=7"))
    train(job_config(tmp_path, demo_root, "c", "seed=8"))
    a, b, c = ((tmp_path / d / "val_predictions.csv").read_bytes() for d in "abc")
    assert a == b  # byte for byte
    assert a != c


def test_a_derived_key_that_disagrees_stops_the_job_before_any_work(tmp_path, demo_root):
    with pytest.raises(ConfigError, match="trainer.max_epochs=1: set epochs=1 instead"):
        train(job_config(tmp_path, demo_root, "a", "trainer.max_epochs=1"))
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "failed" and "set epochs=1" in summary["error"]["message"]
    assert not (tmp_path / "a" / "split.csv").exists()


def test_compile_true_fits_the_compiled_model(tmp_path, demo_root, monkeypatch):
    """``compile=true`` hands ``torch.compile(model)`` to the trainer (here a stand-in that records
    the call: compiling for real takes minutes on CPU); the run ends as usual."""
    import mammo.workflows.fit
    from mammo.models.classifier import DensityClassifier

    compiled = []
    monkeypatch.setattr(mammo.workflows.fit.torch, "compile", lambda model: compiled.append(model) or model)
    train(job_config(tmp_path, demo_root, "a", "compile=true", "epochs=1"))
    assert len(compiled) == 1 and isinstance(compiled[0], DensityClassifier)
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["status"] == "completed"
    train(job_config(tmp_path, demo_root, "b", "epochs=1"))
    assert len(compiled) == 1  # off by default


@pytest.mark.parametrize("scheduled", [True, False], ids=["slurm-job", "local"])
def test_a_signal_ends_a_scheduled_job_as_a_failed_job(
    tmp_path, demo_root, monkeypatch, tests_trusted, scheduled
):
    """In a job the scheduler runs in its own process (submitit sets SUBMITIT_EXECUTOR), an
    interrupt becomes an ordinary error, which Hydra records as a failed job; a local sweep's
    Ctrl-C still stops the whole sweep."""
    from mammo.core.errors import JobInterrupted

    if scheduled:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    else:
        monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    stop = ["+callbacks.stop._target_=tests.callbacks.InterruptOnce", "+callbacks.stop.epoch=2"]
    cfg = job_config(tmp_path, demo_root, "a", *stop, f"+callbacks.stop.marker={tmp_path}/stopped")
    with pytest.raises(JobInterrupted if scheduled else KeyboardInterrupt) as raised:
        train(cfg)
    assert isinstance(raised.value, Exception) == scheduled  # Hydra's run_job catches Exception only
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
