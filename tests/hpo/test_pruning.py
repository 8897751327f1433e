"""Optuna pruning from inside the jobs: per epoch, per CV fold, reported in the study summary."""

from __future__ import annotations

import json
import statistics

import optuna
import pandas as pd
import pytest

from tests.conftest import SMALL_DEMO, TINY, run_cli

STUDY = "mammo_tiny_density_density_optuna"
# only the learning rate varies; 1e-2 diverges on the tiny model (val_loss ~20 after 2 epochs)
LOSS_SEARCH = [
    "monitor=val_loss",
    "monitor_mode=min",
    "hydra.sweeper.direction=minimize",
    "warmup_epochs=0",
    "dropout_rate=0.1",
    "loss=ce",
    "backbone_lr_factor=1.0",
    "train_augment=false",
    "gradcam_per_class=0",
]


def search(out, demo_root, *extra: str) -> int:
    from mammo.train import main

    tiny = [a for a in TINY if not a.startswith("learning_rate=")]  # a fixed value would win over choice()
    args = ["-m", "hpo=density_optuna", *tiny, *SMALL_DEMO, *LOSS_SEARCH]
    return run_cli(main, [*args, f"paths.output_dir={out}", f"paths.demo_dir={demo_root}", *extra])


def trials(out) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out}/mammo_tiny_density/hpo_runs/optuna.db"
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials()


def record(out, number: int) -> tuple[dict, object]:
    for path in (out / "mammo_tiny_density" / "hpo_runs").glob("results_*/optuna_trial.json"):
        data = json.loads(path.read_text())
        if data["trial_number"] == number:
            return data, path.parent
    raise AssertionError(f"no run directory for trial {number}")


def test_median_pruner_stops_the_hopeless_learning_rate(tmp_path, demo_root):
    """The issue's bar: 6 trials, MedianPruner (default: 3 start-up trials, 2 warm-up epochs;
    here 2 start-up trials), a hopeless learning rate in the space."""
    args = ["hydra.sweeper.n_trials=6", "epochs=4", "learning_rate=choice(1e-2,3e-3,1e-9)"]
    assert search(tmp_path, demo_root, *args, "hydra.sweeper.pruner.n_startup_trials=2") == 0
    done = trials(tmp_path)
    pruned = [t for t in done if t.state == optuna.trial.TrialState.PRUNED]
    assert len(done) == 6 and pruned
    assert all(t.params["learning_rate"] != 3e-3 for t in pruned)  # the one that learns is never stopped
    for t in pruned:  # MedianPruner's rule: worse than the median of the earlier trials at that epoch
        step = max(t.intermediate_values)
        earlier = [
            e.intermediate_values[step] for e in done if e.number < t.number and step in e.intermediate_values
        ]
        assert t.intermediate_values[step] > statistics.median(earlier)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done if t not in pruned)
    hpo = tmp_path / "mammo_tiny_density" / "hpo_runs"
    summary = json.loads((hpo / "study_summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 6 - len(pruned), "PRUNED": len(pruned)}
    assert summary["epochs_run"] < 6 * 4 and summary["epochs_budget"] == 6 * 4
    assert summary["epochs_saved_by_pruning"] == 6 * 4 - summary["epochs_run"]
    for t in pruned:  # a complete run directory that says where it stopped
        data, run = record(tmp_path, t.number)
        epochs = max(t.intermediate_values) + 1  # steps are 0-based epochs
        assert epochs >= 3  # the median pruner's default warm-up: 2 epochs never pruned
        assert (
            data["state"] == "PRUNED" and data["pruned"]["epoch"] == epochs and data["epochs_run"] == epochs
        )
        run_summary = json.loads((run / "summary.json").read_text())
        assert run_summary["status"] == "pruned" and run_summary["epochs_completed"] == epochs < 4
        assert json.loads((run / "train_history.json").read_text())["epoch"] == list(range(1, epochs + 1))
        assert (run / "val_predictions.csv").is_file() and (run / "best_model.pt").is_file()
        assert "pruned by Optuna after epoch" in (run / "run.log").read_text()
    table = pd.read_csv(hpo / "trials.csv")
    assert (table["state"] == "PRUNED").sum() == len(pruned) and (
        hpo / "plots" / "optimization_history.png"
    ).is_file()
    jobs = [
        json.loads(line)
        for line in next((tmp_path / "mammo_tiny_density" / "sweeps").glob("*/jobs.jsonl")).open()
    ]
    assert sorted(j["status"] for j in jobs).count("pruned") == len(pruned)
    # relaunching resumes the study: nothing left to run, pruned trials stay pruned
    assert search(tmp_path, demo_root, *args) == 0
    assert [(t.number, t.state) for t in trials(tmp_path)] == [(t.number, t.state) for t in done]


@pytest.mark.parametrize(("pruner", "expected"), [("threshold", "PRUNED"), ("nop", "COMPLETE")])
def test_a_forced_pruner_prunes_and_nop_never_does(tmp_path, demo_root, pruner, expected):
    # val_loss is always above 0: the threshold pruner rejects every trial once warm-up is over
    extra = (
        ["hydra.sweeper.pruner.upper=0.0", "hydra.sweeper.pruner.n_warmup_steps=2"]
        if pruner == "threshold"
        else []
    )
    args = ["hydra.sweeper.n_trials=2", "epochs=4", f"hydra/sweeper/pruner={pruner}", *extra]
    assert search(tmp_path, demo_root, *args) == 0
    done = trials(tmp_path)
    assert [t.state.name for t in done] == [expected, expected]
    for t in done:
        # warm-up of 2 epochs: pruned after the third epoch's report would be too late (the last
        # epoch is never judged), so the threshold pruner stops each trial after epoch 3 of 4
        assert sorted(t.intermediate_values) == ([0, 1, 2] if pruner == "threshold" else [0, 1, 2, 3])
        data, run = record(tmp_path, t.number)
        assert data["state"] == expected
        assert json.loads((run / "summary.json").read_text())["status"] == expected.lower().replace(
            "complete", "completed"
        )


def test_cv_trial_is_pruned_after_its_first_fold(tmp_path, demo_root):
    args = [
        "hydra.sweeper.n_trials=1",
        "epochs=1",
        "cv=kfold",
        "cv.folds=3",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.upper=0.0",
    ]
    assert search(tmp_path, demo_root, *args) == 0
    [t] = trials(tmp_path)
    assert t.state == optuna.trial.TrialState.PRUNED and list(t.intermediate_values) == [0]  # step = fold - 1
    data, trial_dir = record(tmp_path, 0)
    assert data["pruned"] == {
        "step": 0,
        "step_unit": "fold",
        "fold": 1,
        "reported_value": t.intermediate_values[0],
    }
    assert data["epochs_run"] == 1 and data["epochs_budget"] == 3
    assert sorted(p.name for p in trial_dir.glob("fold_*")) == ["fold_1"]  # folds 2 and 3 never ran
    cv_summary = json.loads((trial_dir / "cv_summary.json").read_text())
    assert cv_summary["status"] == "pruned" and cv_summary["num_folds_aggregated"] == 1
