"""k-fold cross-validation in one process and as a fold sweep: same folds, same numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SMALL_DEMO, TINY, run_cli, sklearn_density_metrics

CV = ["cv=kfold", "cv.folds=3", "epochs=1"]


def cv_run(tmp_path, demo_root, *extra: str, multirun: bool = False) -> int:
    from mammo.train import main

    args = [
        *(["-m"] if multirun else []),
        *TINY,
        *SMALL_DEMO,
        *CV,
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
        *extra,
    ]
    return run_cli(main, args)


@pytest.fixture(scope="module")
def cv_dirs(tmp_path_factory, demo_root):
    """The same 3-fold CV run both ways: all folds in one job, and a -m cv.fold=1,2,3 sweep."""
    one = tmp_path_factory.mktemp("cv_one")
    sweep = tmp_path_factory.mktemp("cv_sweep")
    assert cv_run(one, demo_root) == 0
    assert cv_run(sweep, demo_root, "cv.fold=1,2,3", multirun=True) == 0
    name = "density_experiments/results_k3_seed42"
    return one / name, sweep / name


def test_both_modes_give_the_same_folds_and_predictions(cv_dirs):
    one, sweep = cv_dirs
    assert (one / "folds.csv").read_bytes() == (sweep / "folds.csv").read_bytes()
    assert (one / "oof_predictions.csv").read_bytes() == (sweep / "oof_predictions.csv").read_bytes()
    a, b = (json.loads((d / "cv_summary.json").read_text()) for d in cv_dirs)
    assert a["metrics"] == b["metrics"] and a["oof_metrics"] == b["oof_metrics"]


def test_folds_are_patient_grouped_and_cover_everything_once(cv_dirs):
    one, _ = cv_dirs
    folds = pd.read_csv(one / "folds.csv")
    assert sorted(folds["fold"].unique()) == [1, 2, 3]
    assert (folds.groupby("PatientID")["fold"].nunique() == 1).all()  # one validation fold per patient
    for k in (1, 2, 3):
        assert set(folds.loc[folds["fold"] == k, "label"]) == {1, 2, 3, 4}  # stratified
        preds = pd.read_csv(one / f"fold_{k}/results/val_predictions.csv")
        assert set(preds["image_id"]) == set(folds.loc[folds["fold"] == k, "image_id"])
    oof = pd.read_csv(one / "oof_predictions.csv")
    assert sorted(oof["image_id"]) == sorted(folds["image_id"]) and not oof["image_id"].duplicated().any()


@pytest.mark.parametrize("mode", [0, 1])
def test_cv_summary_recomputes_from_fold_summaries(cv_dirs, mode):
    cv_dir = cv_dirs[mode]
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    folds = [json.loads((cv_dir / f"fold_{k}/results/summary.json").read_text()) for k in (1, 2, 3)]
    assert [f["integration"]["cv_fold"] for f in folds] == [1, 2, 3]
    assert all(f["status"] == "completed" for f in folds)
    assert summary["experiment_name"] == "density_k3_seed42" and summary["num_folds"] == 3
    assert summary["seed"] == summary["base_seed"] == 42 and summary["git_commit"] == folds[0]["git_commit"]
    assert summary["num_folds_aggregated"] == 3 and summary["failed_folds"] == []
    for name, short in [
        ("accuracy", "acc"),
        ("kappa_quadratic", "kappa"),
        ("macro_f1", "macro_f1"),
        ("auc_ovr", "auc"),
    ]:
        values = [f[f"best_val_{short}"] for f in folds]
        for block in ("metrics", "aggregated_metrics"):
            stats = summary[block][name]
            assert stats["values"] == values
            assert stats["mean"] == float(np.mean(values)) and stats["std"] == float(np.std(values, ddof=1))
    assert summary["aggregated_metrics"]["kappa"] == summary["metrics"]["kappa_quadratic"]
    detail = summary["fold_details"][1]
    assert detail["fold"] == 2 and detail["summary_path"] == "fold_2/results/summary.json"
    assert (
        detail["best_epoch"] == folds[1]["best_epoch"]
        and detail["val_samples"] == folds[1]["data_config"]["num_val"]
    )
    assert detail["train_samples"] + detail["val_samples"] == 140
    oof = pd.read_csv(cv_dir / "oof_predictions.csv")
    probs = oof.filter(like="prob_class").to_numpy()
    expected = sklearn_density_metrics(oof["true_label"], oof["predicted_label"], probs)
    for name, value in expected.items():
        assert summary["oof_metrics"][name] == pytest.approx(value, abs=1e-6)


def test_each_fold_is_a_complete_run_directory(cv_dirs):
    for cv_dir in cv_dirs:
        for k in (1, 2, 3):
            run = cv_dir / f"fold_{k}/results"
            for name in (
                "summary.json",
                "run.log",
                "best_model.pt",
                "val_predictions.csv",
                "metrics/val_metrics.json",
            ):
                assert (run / name).is_file(), run / name
            assert f"(fold {k} of 3)" in (run / "run.log").read_text()


def test_reaggregate_command_rebuilds_the_summary(cv_dirs, capsys):
    from mammo.cv import main

    cv_dir = cv_dirs[0]
    before = (cv_dir / "cv_summary.json").read_text()
    (cv_dir / "cv_summary.json").unlink()
    main([str(cv_dir)])
    assert (cv_dir / "cv_summary.json").read_text() == before
    printed = capsys.readouterr().out
    assert "3/3 folds" in printed
    assert printed.splitlines()[-1] == (
        f"CV summary: {cv_dir / 'cv_summary.json'} | next: python -m mammo.review {cv_dir}"
        "  (the out-of-fold review)"
    )


def test_a_failed_fold_is_recorded_and_the_others_still_run(tmp_path, demo_root, monkeypatch):
    import mammo.workflows.fit

    original = mammo.workflows.fit.fit_steps

    def fail_fold_2(run):
        if run.fold == 2:
            raise RuntimeError("simulated crash in fold 2")
        return original(run)

    monkeypatch.setattr(mammo.workflows.fit, "fit_steps", fail_fold_2)
    assert cv_run(tmp_path, demo_root) == 1
    cv_dir = tmp_path / "density_experiments/results_k3_seed42"
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    assert summary["failed_folds"] == [2] and summary["num_folds_aggregated"] == 2
    detail = summary["fold_details"][1]
    assert detail["status"] == "failed" and "simulated crash" in detail["error"]["message"]
    assert (
        summary["metrics"]["accuracy"]["folds"] == [1, 3]
        and len(summary["metrics"]["accuracy"]["values"]) == 2
    )
    assert json.loads((cv_dir / "fold_3/results/summary.json").read_text())["status"] == "completed"
