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
    files = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id)}
    assert files == {"summary.json", "val_predictions.csv", "metrics", "plots"}
    metrics = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "metrics")}
    assert "metrics/val_metrics.json" in metrics


@pytest.mark.slow
def test_cv_folds_are_nested_under_their_job(tmp_path, demo_root):
    assert train(tmp_path, demo_root, "cv=kfold", "cv.folds=2", "epochs=1") == 0
    runs = client(tmp_path).search_runs(
        client(tmp_path).get_experiment_by_name("mammo_tiny_density").experiment_id
    )
    folds = [r for r in runs if r.info.run_name.startswith("fold_")]
    parents = [r for r in runs if "mammo.parent" in r.data.tags]
    assert sorted(r.info.run_name for r in folds) == ["fold_1/results", "fold_2/results"]
    assert len(parents) == 1 and parents[0].data.tags["mammo.parent"].startswith("cv:")
    assert {r.data.tags["mlflow.parentRunId"] for r in folds} == {parents[0].info.run_id}
