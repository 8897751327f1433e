"""The patient bootstrap and the vectorised metrics behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mammo.evaluation.bootstrap import bootstrap_intervals, resampled_metrics, weighted_metrics
from mammo.evaluation.metrics import density_metrics


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    targets = np.repeat(np.arange(4), 30)
    logits = rng.normal(size=(120, 4)) + 2.0 * np.eye(4)[targets]
    logits[:5] = logits[5]  # tied scores
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float32), targets


def test_with_unit_weights_the_vectorised_metrics_equal_the_reported_ones(predictions):
    probs, targets = predictions
    reported = density_metrics(torch.tensor(probs), torch.tensor(targets))
    vectorised = weighted_metrics(probs.astype(np.float64), targets, np.ones((1, len(targets))))
    assert set(vectorised) == set(reported)
    for name, value in reported.items():
        assert vectorised[name][0] == pytest.approx(value, abs=1e-6), name


def test_metrics_agree_with_scikit_learn(predictions):
    probs, targets = predictions
    reported = density_metrics(torch.tensor(probs), torch.tensor(targets))
    predicted = probs.argmax(axis=1)
    assert reported["kappa_linear"] == pytest.approx(cohen_kappa_score(targets, predicted, weights="linear"))
    assert reported["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(targets, predicted, weights="quadratic")
    )
    dense, dense_predicted = targets >= 2, predicted >= 2
    assert reported["dense_accuracy"] == pytest.approx(np.mean(dense == dense_predicted))
    assert reported["dense_sensitivity"] == pytest.approx(dense_predicted[dense].mean())
    assert reported["dense_specificity"] == pytest.approx((~dense_predicted[~dense]).mean())
    assert reported["dense_auc"] == pytest.approx(roc_auc_score(dense, probs[:, 2:].sum(axis=1)), abs=1e-6)
    weights = np.random.default_rng(0).integers(0, 3, size=(1, len(targets))).astype(float)
    auc = roc_auc_score(dense, probs[:, 2:].sum(axis=1), sample_weight=weights[0])
    assert weighted_metrics(probs.astype(np.float64), targets, weights)["dense_auc"][0] == pytest.approx(auc)


def test_patients_are_resampled_with_all_their_images():
    """Patient A has 4 images, all right; patient B 1, wrong. Resampling patients gives accuracy
    1 (A, A), 0.8 (A, B) or 0 (B, B), with chances 1/4, 1/2, 1/4; resampling images would give
    other values too (e.g. 0.6)."""
    probs = np.array([[0.9, 0.1, 0, 0]] * 4 + [[0.1, 0.9, 0, 0]])
    targets = np.array([0, 0, 0, 0, 0])
    accuracy = resampled_metrics(probs, targets, ["A"] * 4 + ["B"], 4000, seed=1)["accuracy"]
    values, counts = np.unique(np.round(accuracy, 6), return_counts=True)
    assert values.tolist() == [0.0, 0.8, 1.0]
    assert np.allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.03)
    assert bootstrap_intervals(probs, targets, ["A"] * 4 + ["B"], 4000, seed=1)["accuracy"] == [0.0, 1.0]


def test_intervals_are_seeded_and_contain_the_estimate(predictions):
    probs, targets = predictions
    patients = np.arange(len(targets)) // 2
    first = bootstrap_intervals(probs, targets, patients, 300, seed=7)
    assert first == bootstrap_intervals(probs, targets, patients, 300, seed=7)
    assert first != bootstrap_intervals(probs, targets, patients, 300, seed=8)
    reported = density_metrics(torch.tensor(probs), torch.tensor(targets))
    for name, (low, high) in first.items():
        assert low <= reported[name] <= high, name
    assert 0 < first["kappa_quadratic"][1] - first["kappa_quadratic"][0] < 0.5


def test_too_few_patients_get_no_interval_and_a_note(predictions):
    from mammo.evaluation.intervals import metric_intervals

    probs, targets = predictions
    four = metric_intervals(probs, targets, [f"P{i % 4}" for i in range(len(targets))], 200, 0)
    assert four["confidence_intervals"] == {}
    assert four["bootstrap"]["num_patients"] == 4
    assert four["bootstrap"]["note"] == "4 patient(s): too few for an interval (needs 5)"
    five = metric_intervals(probs, targets, [f"P{i % 5}" for i in range(len(targets))], 200, 0)
    assert (
        five["confidence_intervals"]["kappa_quadratic"][0]
        < five["confidence_intervals"]["kappa_quadratic"][1]
    )
    assert "note" not in five["bootstrap"]


def test_a_run_on_four_validation_patients_says_why_it_has_no_interval(tmp_path, demo_root):
    """run.log, metrics/val_metrics.json, summary.json, the review and the report pack: no
    interval (a zero-width one on 4 patients looked like certainty) and the note."""
    import json

    from mammo.data.demo import ensure_demo_dataset
    from mammo.evaluation.report_pack import report_pack
    from tests.conftest import train_tiny

    demo = ensure_demo_dataset(demo_root, n_patients=24, seed=0, height=160, width=128)  # SMALL_DEMO's
    split = four_validation_patients(demo, tmp_path / "split.csv")
    run = train_tiny(tmp_path, demo_root, "epochs=1", f"data.split_csv={split}", "review=true")
    stored = json.loads((run / "metrics" / "val_metrics.json").read_text())
    patients = stored["bootstrap"]["num_patients"]
    assert patients < 5 and stored["confidence_intervals"] == {}
    note = f"{patients} patient(s): too few for an interval (needs 5)"
    assert stored["bootstrap"]["note"] == note
    summary = json.loads((run / "summary.json").read_text())
    assert summary["confidence_intervals"] == {} and summary["bootstrap"]["note"] == note
    assert (
        f"95% confidence intervals: none for {stored['num_samples']} images of {note}"
        in (run / "run.log").read_text()
    )
    assert "Best kappa 95% CI" not in (run / "run.log").read_text()
    assert (
        f"image, breast, exam level: no 95 % interval, {note}" in (run / "review" / "index.html").read_text()
    )
    report_pack([run], tmp_path / "report")
    assert f"No 95 % interval for seed42: {note}." in (tmp_path / "report" / "metrics_table.md").read_text()


def four_validation_patients(demo: Path, out: Path) -> Path:
    """A split CSV (by PatientID) whose val side is 4 patients holding every density."""
    import pandas as pd
    import pydicom

    labels = pd.read_csv(demo / "classificacao.csv", dtype=str)
    labels["PatientID"] = [
        str(pydicom.dcmread(next((demo / "archive" / acc).glob("*.dcm")), stop_before_pixels=True).PatientID)
        for acc in labels["AccessionNumber"]
    ]
    val, seen = [], set()
    for patient, part in labels.groupby("PatientID"):
        if len(val) < 4 and not set(part["Classification"]) <= seen:
            val.append(patient)
            seen |= set(part["Classification"])
    assert len(seen) == 4, "the demo set should allow 4 validation patients holding every density"
    patients = labels.drop_duplicates("PatientID")["PatientID"]
    sides = ["val" if p in val else "train" for p in patients]
    pd.DataFrame({"PatientID": patients, "split": sides}).to_csv(out, index=False)
    return out
