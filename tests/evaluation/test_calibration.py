"""Reliability diagrams: the bins behind the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo.evaluation.calibration import fit_temperature, reliability_bins, write_reliability
from mammo.evaluation.metrics import density_metrics


def test_the_bins_add_up_to_the_reported_ece_and_the_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bins = reliability_bins(probs, targets)
    assert bins["count"].sum() == 300 and len(bins["edges"]) == 16
    reported = density_metrics(torch.tensor(probs), torch.tensor(targets))["ece"]
    assert bins["ece"] == pytest.approx(reported, abs=1e-6)
    filled = bins["count"] > 0
    confident = probs.max(axis=1) >= bins["edges"][-2]
    assert bins["count"][-1] == confident.sum()
    assert bins["accuracy"][-1] == pytest.approx((probs.argmax(1) == targets)[confident].mean())
    assert np.isnan(bins["accuracy"][~filled]).all()
    path = write_reliability(probs, targets, tmp_path / "plots" / "reliability_val.png", "Validation")
    assert path.stat().st_size > 10_000


def test_temperature_scaling_recovers_an_overconfident_models_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4000, 4)) * 2
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in calibrated])  # labels drawn from the true probabilities
    overconfident = np.exp(2.5 * logits) / np.exp(2.5 * logits).sum(axis=1, keepdims=True)
    fitted = fit_temperature(overconfident, targets)
    assert fitted["temperature"] == pytest.approx(2.5, rel=0.1)
    assert fitted["val_nll_after"] < fitted["val_nll_before"]
    assert fit_temperature(calibrated, targets)["temperature"] == pytest.approx(1.0, rel=0.1)
