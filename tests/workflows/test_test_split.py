"""The locked test split: held out of training and model selection, evaluated once after training."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.conftest import TINY, run_cli, train_tiny

DEMO = ["data.demo.n_patients=40", "data.demo.height=160", "data.demo.width=128"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_root):
    return train_tiny(
        tmp_path_factory.mktemp("test_split"),
        demo_root,
        *DEMO,
        "epochs=2",
        "data.test_fraction=0.25",
        "eval.bootstrap=100",
        "calibrate=temperature",
    )


def test_test_fraction_holds_out_whole_patients_and_evaluates_them_once(run_dir):
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    assert set(split["split"]) == {"train", "val", "test"}
    assert not split.groupby("PatientID")["split"].nunique().gt(1).any()
    test_ids = set(split.loc[split["split"] == "test", "image_id"])
    assert 0.15 < len(test_ids) / len(split) < 0.35
    predictions = pd.read_csv(run_dir / "test_predictions.csv", dtype={"image_id": str})
    assert set(predictions["image_id"]) == test_ids and len(predictions) == len(test_ids)
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"image_id": str})
    assert not set(val["image_id"]) & test_ids
    metrics = json.loads((run_dir / "metrics" / "test_metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == len(test_ids)
    assert set(metrics["confidence_intervals"]) >= {"kappa_quadratic", "kappa_linear", "dense_accuracy"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_metrics"]["test_kappa"] == pytest.approx(metrics["kappa_quadratic"])
    intervals = metrics["confidence_intervals"]
    assert summary["test_confidence_intervals"]["test_kappa"] == intervals["kappa_quadratic"]
    data = summary["data_config"]
    assert data["num_test"] == len(test_ids)
    assert data["num_train"] + data["num_val"] + len(test_ids) == len(split)
    assert data["test_fraction"] == 0.25
    assert "Test split: evaluating the best model on" in (run_dir / "run.log").read_text()
    calibration = summary["calibration"]  # fitted on val, stored in the checkpoint, used on test
    assert calibration["method"] == "temperature"
    assert calibration["val_nll_after"] <= calibration["val_nll_before"]
    stored = torch.load(run_dir / "best_model.pt", map_location="cpu", weights_only=False)["mammo"]
    assert stored["temperature"] == pytest.approx(calibration["temperature"])
    for split in ("val", "test"):  # a reliability diagram per split
        assert (run_dir / "plots" / f"reliability_{split}.png").stat().st_size > 10_000


def test_no_test_image_influences_training_or_the_best_epoch(tmp_path, run_dir, demo_root):
    """The same run without the test images in the data at all: the same history (every epoch's
    val metrics) and the same best epoch."""
    from mammo.train import main

    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    [root] = demo_root.glob("v2-p40-*")
    labels = pd.read_csv(root / "classificacao.csv", dtype=str)
    test_accessions = set(split.loc[split["split"] == "test", "AccessionNumber"])
    kept = labels[~labels["AccessionNumber"].isin(test_accessions)]
    kept.to_csv(tmp_path / "labels.csv", index=False)
    split[split["split"] != "test"].to_csv(tmp_path / "split.csv", index=False)
    out = tmp_path / "outputs"
    args = [
        *TINY,
        "epochs=2",
        "data=dicom_csv",
        f"data.csv={tmp_path / 'labels.csv'}",
        f"data.dicom_root={root / 'archive'}",
        f"data.split_csv={tmp_path / 'split.csv'}",
        "data.cache_mode=memory",
        "eval.bootstrap=0",
        f"paths.output_dir={out}",
    ]
    assert run_cli(main, args) == 0
    [without] = (out / "mammo_tiny_density").glob("results_*")
    with_test = pd.read_csv(run_dir / "train_history.csv")
    without_test = pd.read_csv(without / "train_history.csv")
    columns = [c for c in with_test.columns if c.startswith(("val_", "train_"))]
    pd.testing.assert_frame_equal(with_test[columns], without_test[columns])
    best = [json.loads((r / "summary.json").read_text())["best_epoch"] for r in (run_dir, without)]
    assert best[0] == best[1]
    assert not (without / "test_predictions.csv").exists()


def test_evaluate_split_test_reproduces_the_runs_test_metrics(tmp_path, run_dir, demo_root):
    from mammo.evaluate import main as evaluate

    out = tmp_path / "outputs"
    ckpt = run_dir / "best_model.pt"
    args = [f"ckpt={ckpt}", "split=test", "data.num_workers=0", "eval.bootstrap=100", *DEMO]
    assert run_cli(evaluate, [*args, f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]) == 0
    [evaluation] = (out / "evaluations").glob("results_*")
    evaluated = json.loads((evaluation / "metrics" / "eval_metrics.json").read_text())
    tested = json.loads((run_dir / "metrics" / "test_metrics.json").read_text())
    assert evaluated["num_samples"] == tested["num_samples"]
    for name in ("accuracy", "kappa_quadratic", "kappa_linear", "brier"):
        assert evaluated[name] == pytest.approx(tested[name], abs=1e-6)
    for name, bounds in tested["confidence_intervals"].items():  # same predictions, patients, seed
        assert evaluated["confidence_intervals"][name] == pytest.approx(bounds, abs=1e-6), name


def test_under_cv_the_test_images_are_in_no_fold_and_every_fold_model_and_the_ensemble_predict_them(
    tmp_path, demo_root
):
    import numpy as np

    from mammo.train import main

    out = tmp_path / "outputs"
    args = [
        *TINY,
        *DEMO,
        "epochs=1",
        "cv=kfold",
        "cv.folds=2",
        "data.test_fraction=0.25",
        "eval.bootstrap=50",
    ]
    assert run_cli(main, [*args, f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]) == 0
    cv_dir = out / "density_experiments" / "results_k2_seed42"
    folds = pd.read_csv(cv_dir / "folds.csv", dtype=str)
    test_ids = set(folds.loc[folds["fold"] == "0", "image_id"])
    assert test_ids and not folds.groupby("PatientID")["fold"].nunique().gt(1).any()
    fold_tests = []
    for k in (1, 2):
        run = cv_dir / f"fold_{k}" / "results"
        val = pd.read_csv(run / "val_predictions.csv", dtype={"image_id": str})
        assert not set(val["image_id"]) & test_ids
        fold_tests.append(
            pd.read_csv(run / "test_predictions.csv", dtype={"image_id": str}).set_index("image_id")
        )
        assert set(fold_tests[-1].index) == test_ids
    summary = json.loads((cv_dir / "cv_summary.json").read_text())["test"]
    assert summary["num_images"] == len(test_ids) and summary["folds"] == [1, 2]
    ensemble = pd.read_csv(cv_dir / "test_ensemble_predictions.csv", dtype={"image_id": str}).set_index(
        "image_id"
    )
    columns = [c for c in ensemble.columns if c.startswith("prob_class")]
    mean = (fold_tests[0][columns] + fold_tests[1].loc[fold_tests[0].index, columns]) / 2
    np.testing.assert_allclose(ensemble.loc[mean.index, columns].to_numpy(), mean.to_numpy(), atol=1e-6)
    expected = (ensemble[columns].to_numpy().argmax(axis=1) == ensemble["true_label"].to_numpy() - 1).mean()
    assert summary["ensemble"]["metrics"]["accuracy"] == pytest.approx(expected)
    assert summary["ensemble"]["bootstrap"]["resamples"] == 50
    low, high = summary["ensemble"]["confidence_intervals"]["accuracy"]
    assert low <= expected <= high
    assert summary["fold_metrics"]["kappa_quadratic"]["folds"] == [1, 2]
    for level in ("breast", "exam"):  # the ensemble's breast and exam level too
        units = pd.read_csv(cv_dir / f"test_ensemble_predictions_{level}.csv")
        assert summary["ensemble"]["levels"][level]["num_units"] == len(units) > 0
        assert (cv_dir / "metrics" / f"test_ensemble_{level}_metrics.json").is_file()


def test_breast_and_exam_levels_are_reported_for_val_and_test(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    for prefix in ("val", "test"):
        stem, key = f"{prefix}_predictions", f"{prefix}_levels"
        images = pd.read_csv(run_dir / f"{stem}.csv", dtype={"image_id": str, "AccessionNumber": str})
        for level in ("breast", "exam"):
            units = pd.read_csv(run_dir / f"{stem}_{level}.csv", dtype={"AccessionNumber": str})
            metrics = json.loads((run_dir / "metrics" / f"{prefix}_{level}_metrics.json").read_text())
            assert metrics["num_units"] == len(units) == summary[key][level]["num_units"]
            assert units["num_images"].sum() <= len(images)  # left-out units' images are not counted
            assert metrics["left_out"] == summary[key][level]["left_out"]
            assert set(metrics["confidence_intervals"]) >= {"kappa_linear", "dense_accuracy"}
        exams = pd.read_csv(run_dir / f"{stem}_exam.csv", dtype={"AccessionNumber": str})
        assert set(exams["AccessionNumber"]) <= set(images["AccessionNumber"])
        assert not exams.duplicated(["PatientID", "AccessionNumber"]).any()
