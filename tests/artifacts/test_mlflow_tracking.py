"""``logger=mlflow``: a finished run read back with MLflow's own client."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL_DEMO, TINY, run_cli

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install -e '.[mlflow]'")


def train(out, demo_root, *extra: str) -> int:
    from mammo.train import main

    args = [*TINY, *SMALL_DEMO, "logger=mlflow", "epochs=2", f"paths.output_dir={out}"]
    return run_cli(main, [*args, f"paths.demo_dir={demo_root}", *extra])


def runs_of(out, experiment: str = "mammo_tiny_density") -> list:
    tracking = client(out)
    return tracking.search_runs([tracking.get_experiment_by_name(experiment).experiment_id])


def client(out):
    return mlflow.tracking.MlflowClient(f"sqlite:///{out}/mlruns/mlflow.db")


@pytest.mark.slow
def test_a_run_is_tracked_with_its_params_metrics_and_files(tmp_path, demo_root):
    assert train(tmp_path, demo_root) == 0
    run_dir = next((tmp_path / "mammo_tiny_density").glob("results_*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    run = client(tmp_path).get_run(summary["integration"]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    params = run.data.params
    for key, value in summary["hyperparameters"].items():
        assert params[key] == str(value), key
    assert run.data.metrics["best_val_kappa"] == pytest.approx(summary["best_val_kappa"])
    history = client(tmp_path).get_metric_history(run.info.run_id, "val_kappa")
    assert len(history) == 2  # one value per epoch
    assert run.data.tags["mammo.status"] == "completed"
    assert run.data.tags["mammo.run_dir"] == str(run_dir.resolve())
    # MLflow 3's UI opens the experiment in its runs table of model training, not its GenAI view
    experiment = client(tmp_path).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    files = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id)}
    assert files == {"summary.json", "val_predictions.csv", "metrics", "plots"}
    metrics = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "metrics")}
    assert "metrics/val_metrics.json" in metrics


@pytest.mark.slow
def test_cv_folds_are_nested_under_their_job(tmp_path, demo_root):
    assert train(tmp_path, demo_root, "cv=kfold", "cv.folds=2", "epochs=1") == 0
    runs = runs_of(tmp_path)
    folds = [r for r in runs if r.info.run_name.startswith("fold_")]
    parents = [r for r in runs if "mammo.parent" in r.data.tags]
    assert sorted(r.info.run_name for r in folds) == ["fold_1/results", "fold_2/results"]
    assert len(parents) == 1 and parents[0].data.tags["mammo.parent"].startswith("cv:")
    assert {r.data.tags["mlflow.parentRunId"] for r in folds} == {parents[0].info.run_id}


@pytest.mark.slow
def test_hpo_trials_are_nested_under_their_study(tmp_path, demo_root):
    assert train(tmp_path, demo_root, "-m", "hpo=density_optuna", "hydra.sweeper.n_trials=2", "epochs=1") == 0
    runs = runs_of(tmp_path)
    trials = [r for r in runs if r.info.run_name.startswith("results_")]
    parents = [r for r in runs if "mammo.parent" in r.data.tags]
    assert sorted(r.info.run_name for r in trials) == ["results_1", "results_2"]
    assert [p.data.tags["mammo.parent"] for p in parents] == ["study:mammo_tiny_density_density_optuna"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    hpo_runs = tmp_path / "mammo_tiny_density" / "hpo_runs"
    for trial in trials:  # each trial's run is the one its summary.json names
        summary = json.loads((hpo_runs / trial.info.run_name / "summary.json").read_text())
        assert summary["integration"]["mlflow_run_id"] == trial.info.run_id
        assert trial.data.params["learning_rate"] == str(summary["hyperparameters"]["learning_rate"])


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(tmp_path, demo_root, tests_trusted):
    from mammo.train import main

    stop = ["+callbacks.stop._target_=tests.callbacks.InterruptOnce", "+callbacks.stop.epoch=2"]
    assert train(tmp_path, demo_root, "epochs=3", *stop, f"+callbacks.stop.marker={tmp_path}/stopped") != 0
    run_dir = tmp_path / "mammo_tiny_density" / "results_1"
    run_id = json.loads((run_dir / "summary.json").read_text())["integration"]["mlflow_run_id"]
    cut = client(tmp_path).get_run(run_id)
    assert cut.info.status == "KILLED" and cut.data.tags["mammo.status"] == "interrupted"
    assert "summary.json" in {a.path for a in client(tmp_path).list_artifacts(run_id)}  # the files so far
    assert run_cli(main, [f"resume={run_dir}"]) == 0
    [run] = runs_of(tmp_path)  # the same MLflow run, no second one
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["mammo.status"] == "completed"
    history = client(tmp_path).get_metric_history(run_id, "val_kappa")
    assert len(history) == 3  # epoch 1 before the cut, epochs 2 and 3 after it
    assert json.loads((run_dir / "summary.json").read_text())["integration"]["mlflow_run_id"] == run_id


@pytest.mark.slow
def test_the_printed_link_opens_the_runs_table_in_a_real_browser(tmp_path, demo_root, browser):
    """MLflow 3 opens an experiment's page in its GenAI view ("No data"); the link a run prints
    opens the runs table with the run in it (headless Chromium, MLflow's own server)."""
    import re

    from selenium.webdriver.support.ui import WebDriverWait

    from tests.servers import mlflow_server

    assert train(tmp_path, demo_root) == 0
    log = (tmp_path / "mammo_tiny_density" / "results_1" / "run.log").read_text()
    said = re.search(r"MLflow: run results_1 of mammo_tiny_density, in the runs table: (.*)$", log, re.M)
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    prefix = f"mlflow ui --backend-store-uri {store}, then http://127.0.0.1:5000/"
    assert said and said[1].startswith(prefix)
    page = said[1].removeprefix(prefix)
    assert page.endswith("?workflowType=machine_learning")
    with mlflow_server(store) as url:
        browser.get(f"{url}/{page}")
        WebDriverWait(browser, 60).until(lambda b: "results_1" in b.page_source)
        text = browser.find_element("tag name", "body").text
    assert "Runs" in text and "results_1" in text and "No data available" not in text
