"""Optuna search through the Hydra sweeper: artifacts, resuming, failures, CV objective."""

from __future__ import annotations

import json
import os

import numpy as np
import optuna
import pandas as pd
import pytest

from tests.conftest import SMALL_DEMO, TINY, run_cli

STUDY = "mammo_tiny_density_density_optuna"


def search(tmp_path, demo_root, *extra: str) -> int:
    from mammo.train import main

    args = [
        "-m",
        "hpo=density_optuna",
        *TINY,
        *SMALL_DEMO,
        "epochs=2",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
        *extra,
    ]
    return run_cli(main, args)


def study(tmp_path) -> optuna.Study:
    return optuna.load_study(
        study_name=STUDY, storage=f"sqlite:///{tmp_path}/mammo_tiny_density/hpo_runs/optuna.db"
    )


@pytest.fixture(scope="module")
def hpo_dir(tmp_path_factory, demo_root):
    out = tmp_path_factory.mktemp("hpo")
    assert search(out, demo_root, "hydra.sweeper.n_trials=3") == 0
    return out


def test_study_writes_every_artifact(hpo_dir):
    runs = hpo_dir / "mammo_tiny_density" / "hpo_runs"
    trials = study(hpo_dir).get_trials()
    assert study(hpo_dir).metric_names == ["val_kappa"]  # what optuna-dashboard shows, not "Objective 0"
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    for n, t in enumerate(trials):
        run = runs / f"results_{n + 1}"
        record = json.loads((run / "optuna_trial.json").read_text())
        assert record["trial_number"] == n and record["trial_id"] == f"{STUDY}_trial{n}"
        assert record["state"] == "COMPLETE" and record["metric"] == "val_kappa"
        assert {k: record["params"][k] for k in t.params} == pytest.approx(t.params) and record[
            "datetime_complete"
        ]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["integration"]["optuna_trial_id"] == record["trial_id"]
        # the objective is the best epoch's monitored value, exactly
        assert t.value == record["value"] == summary["best_val_kappa"]
        assert summary["hyperparameters"]["dropout_rate"] == pytest.approx(t.params["dropout_rate"])
        assert summary["hyperparameters"]["loss"] == t.params["loss"] in ("ce", "corn", "emd")  # a choice
        lines = [json.loads(x) for x in (run / f"hpo_trial{n}.jsonl").read_text().splitlines()]
        assert [x["iteration"] for x in lines] == [1, 2] and all(
            "val_kappa" in x and "timestamp" in x for x in lines
        )
    table = pd.read_csv(runs / "trials.csv")
    assert list(table["number"]) == [0, 1, 2] and set(table["state"]) == {"COMPLETE"}
    assert table["run_dir"].str.endswith(("results_1", "results_2", "results_3")).all()
    best = json.loads((runs / "best_params.json").read_text())
    assert best["value"] == max(t.value for t in trials) and best["run_dir"].endswith(
        f"results_{best['trial_number'] + 1}"
    )
    assert (runs / "plots" / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"


def test_relaunch_resumes_the_study(hpo_dir, demo_root):
    before = (hpo_dir / "mammo_tiny_density/hpo_runs/results_1/optuna_trial.json").read_text()
    study(hpo_dir).ask()  # a trial left RUNNING, as by a killed sweep
    assert search(hpo_dir, demo_root, "hydra.sweeper.n_trials=5") == 0
    trials = study(hpo_dir).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]  # 3 was orphaned
    runs = sorted((hpo_dir / "mammo_tiny_density/hpo_runs").glob("results_*/optuna_trial.json"))
    assert [json.loads(p.read_text())["trial_number"] for p in runs] == [0, 1, 2, 4]  # no dir reused
    assert (hpo_dir / "mammo_tiny_density/hpo_runs/results_1/optuna_trial.json").read_text() == before
    assert search(hpo_dir, demo_root, "hydra.sweeper.n_trials=5") == 0  # already complete: nothing runs
    assert len(study(hpo_dir).get_trials()) == 5


def test_a_failing_trial_does_not_stop_the_study(tmp_path, demo_root):
    code = search(
        tmp_path,
        demo_root,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.75",
        "weight_decay=choice(0.0001,-1.0)",  # -1: a setting check fails the trial
        "~hydra.sweeper.params.loss",  # the space whose seeded draws give both values in 4 trials
    )
    assert code == 0
    trials = study(tmp_path).get_trials()
    assert len(trials) == 4  # the seeded sampler draws both values within 4 trials
    assert {t.params["weight_decay"]: t.state.name for t in trials} == {0.0001: "COMPLETE", -1.0: "FAIL"}
    records = [
        json.loads(p.read_text())
        for p in (tmp_path / "mammo_tiny_density/hpo_runs").glob("*/optuna_trial.json")
    ]
    failed = next(r for r in records if r["state"] == "FAIL")
    assert "weight_decay=-1.0: expected a number >= 0" in failed["reason"]
    summary = json.loads(
        (
            tmp_path / "mammo_tiny_density/hpo_runs" / failed["run_dir"].rsplit("/", 1)[1] / "summary.json"
        ).read_text()
    )
    assert summary["status"] == "failed"


def test_cv_trial_returns_the_mean_of_its_folds(tmp_path, demo_root):
    assert (
        search(
            tmp_path,
            demo_root,
            "hydra.sweeper.n_trials=1",
            "cv=kfold",
            "cv.folds=3",
            "epochs=1",
            "data.subset=0.75",
        )
        == 0
    )
    (trial,) = study(tmp_path).get_trials()
    run = tmp_path / "mammo_tiny_density/hpo_runs/results_1"
    folds = [json.loads((run / f"fold_{k}/results/summary.json").read_text()) for k in (1, 2, 3)]
    assert trial.value == pytest.approx(float(np.mean([f["best_val_kappa"] for f in folds])), abs=1e-12)
    assert json.loads((run / "cv_summary.json").read_text())["objective"]["mean"] == trial.value
    assert all(f["data_config"]["subset"] == 0.75 for f in folds)
    assert all(f["data_config"]["num_train"] < 140 - f["data_config"]["num_val"] for f in folds)


def completed_trials(out) -> int:
    """COMPLETE trials in the study's storage (0 while another process holds it locked)."""
    try:
        return len(study(out).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    except Exception:  # the study is being created, or the database is locked for a moment
        return 0


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_study_total(tmp_path, demo_root):
    """The bar: kill the sweep after trial 2, relaunch with n_trials=4 -> 4 finished trials,
    numbered 0-3, in 4 distinct directories."""
    import signal
    import subprocess
    import sys
    import time

    args = ["-m", "hpo=density_optuna", *TINY, *SMALL_DEMO, "epochs=1", "hydra.sweeper.n_trials=4"]
    args += [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mammo.train", *args],
        cwd=tmp_path,  # an HPO launch leaves empty results_N dirs under ./outputs (see issue 5 note)
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # the event is the study recording trial 1 (the sweep tells Optuna after its job returns),
    # not the job's own record, which comes first: a kill between the two would lose trial 1
    storage = tmp_path / "mammo_tiny_density/hpo_runs/optuna.db"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if storage.is_file() and completed_trials(tmp_path) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(study(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    assert search(tmp_path, demo_root, "epochs=1", "hydra.sweeper.n_trials=4") == 0
    trials = study(tmp_path).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and all(t.state.is_finished() for t in trials)
    records = {
        json.loads(p.read_text())["trial_number"]: (p.parent, json.loads(p.read_text()))
        for p in (tmp_path / "mammo_tiny_density/hpo_runs").glob("*/optuna_trial.json")
    }
    completed = [t.number for t in trials if t.state.name == "COMPLETE"]
    assert set(completed) <= set(records) and len({d for d, _ in records.values()}) == len(records)
    # killed between trials: all 4 complete; killed during trial 2: it is FAIL (interrupted), 3 complete
    assert completed in ([0, 1, 2, 3], [0, 1, 3])
    if 2 not in completed and 2 in records:
        assert records[2][1]["state"] == "FAIL" and records[2][1]["reason"].startswith("interrupted")
