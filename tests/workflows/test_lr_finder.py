"""``tune=lr_find``: Lightning's learning-rate finder on the run's model and data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mammo.core.errors import ConfigError
from tests.conftest import SMALL_DEMO, TINY, console_of, last_line

FINDER = ["tune=lr_find", "tune.num_training=30", "epochs=2"]


def train(tmp_path, demo_root, *extra):
    from mammo.train import main

    args = [*TINY, *SMALL_DEMO, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}", *extra]
    return console_of(main, args)


def test_the_finder_writes_its_curve_and_suggestion_and_says_how_to_train_at_it(tmp_path, demo_root):
    code, console = train(tmp_path, demo_root, *FINDER)
    assert code == 0
    run = tmp_path / "mammo_tiny_density" / "results_1"
    record = json.loads((run / "metrics" / "lr_find.json").read_text())
    assert len(record["lr"]) == len(record["loss"]) == 30
    assert record["lr"] == sorted(record["lr"]) and 1e-7 <= record["lr"][0] < record["lr"][-1] <= 1.0
    assert record["lr"][0] <= record["suggestion"] <= record["lr"][-1]
    assert (run / "plots" / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 0
    assert summary["lr_find"]["suggestion"] == record["suggestion"] and not (run / "best_model.pt").exists()
    assert f"Learning-rate finder: suggestion {record['suggestion']:.3g} (30 steps" in console
    line = last_line(console)
    assert line.startswith(
        f"Learning-rate finder: {run / 'plots' / 'lr_find.png'} | next: python -m mammo.train "
    )
    assert line.endswith(f"learning_rate={record['suggestion']:.3g}") and "tune=" not in line


def test_tune_apply_trains_at_the_suggestion_and_says_where_the_rate_came_from(tmp_path, demo_root):
    code, _ = train(tmp_path, demo_root, *FINDER, "tune.apply=true")
    assert code == 0
    run = tmp_path / "mammo_tiny_density" / "results_1"
    suggestion = json.loads((run / "metrics" / "lr_find.json").read_text())["suggestion"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["hyperparameters"]["learning_rate"] == suggestion
    assert summary["learning_rate_source"]["tune"] == "lr_find"
    assert summary["learning_rate_source"]["configured"] == 3e-3  # TINY's
    assert pd.read_csv(run / "train_history.csv")["lr"][0] == pytest.approx(suggestion)  # no warm-up
    assert (run / "best_model.pt").is_file()


def test_the_finder_is_refused_where_it_cannot_serve_the_run():
    from mammo.workflows.lr_finder import tune_settings
    from tests.test_configs import compose_train

    ddp = compose_train("tune=lr_find", "trainer=ddp_cpu", "trainer.devices=2")
    with pytest.raises(ConfigError, match="tune=lr_find runs on one process"):
        tune_settings(ddp)
    folds = compose_train("tune=lr_find", "cv=kfold", "cv.folds=3")
    with pytest.raises(ConfigError, match="add tune.apply=true"):
        tune_settings(folds)
    assert tune_settings(compose_train("tune=lr_find", "cv=kfold", "tune.apply=true")).apply is True
    assert tune_settings(compose_train()) is None


def test_under_cv_the_finder_runs_once_before_the_folds_and_every_fold_trains_at_it(tmp_path, demo_root):
    code, _ = train(tmp_path, demo_root, *FINDER, "tune.apply=true", "cv=kfold", "cv.folds=2", "epochs=1")
    assert code == 0
    cv_dir = tmp_path / "density_experiments" / "results_k2_seed42"
    found = cv_dir / "metrics" / "lr_find.json"
    suggestion = json.loads(found.read_text())["suggestion"]
    for fold in (1, 2):
        run = cv_dir / f"fold_{fold}" / "results"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["hyperparameters"]["learning_rate"] == suggestion
        assert summary["learning_rate_source"]["file"] == str(found)
        assert not (run / "metrics" / "lr_find.json").exists()
