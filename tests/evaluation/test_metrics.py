"""mammo.evaluation.metrics agrees with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from mammo.evaluation import metrics
from tests.conftest import sklearn_density_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_density_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[y]
    probs = torch.tensor(logits).softmax(1).float()
    got = metrics.density_metrics(probs, torch.tensor(y))
    p = probs.argmax(1).numpy()
    expected = sklearn_density_metrics(y, p, probs.numpy(), first_label=0)
    assert list(got) == list(expected)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name
    assert metrics.confusion_matrix(probs, torch.tensor(y)) == confusion_matrix(y, p).tolist()


def test_balanced_accuracy_ignores_absent_classes_like_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 3])
    probs = torch.nn.functional.one_hot(torch.tensor(p), 4).float()
    got = metrics.density_metrics(probs, torch.tensor(y))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))


def test_short_names():
    assert metrics.short({"kappa_quadratic": 0.5, "accuracy": 0.7}, "val") == {
        "val_kappa": 0.5,
        "val_acc": 0.7,
    }
