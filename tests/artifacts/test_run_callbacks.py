"""The divergence guard: at once on the CPU, without a host sync per step where that costs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mammo.artifacts.run_callbacks import FiniteLossGuard
from mammo.core.errors import TrainingError

TRAINER = SimpleNamespace(current_epoch=0)
MODULE = SimpleNamespace(hparams={"learning_rate": 0.1})
LOSSES = [1.0, 0.9, float("nan"), 0.8, float("inf")]


def feed(guard: FiniteLossGuard, losses) -> None:
    for batch_idx, loss in enumerate(losses):
        guard.on_train_batch_end(TRAINER, MODULE, {"loss": torch.tensor(loss)}, None, batch_idx)


def test_on_the_cpu_the_first_bad_step_stops_the_run_at_once():
    with pytest.raises(
        TrainingError, match=r"training loss is nan at epoch 1, batch 3 \(learning_rate=0.1\)"
    ):
        feed(FiniteLossGuard(), LOSSES)


def test_deferred_the_first_bad_step_is_reported_before_validation():
    guard = FiniteLossGuard(check_every=50, defer=True)
    feed(guard, LOSSES)  # no check yet: nothing read back from the device
    with pytest.raises(TrainingError, match=r"training loss is nan at epoch 1, batch 3"):
        guard.on_validation_start(TRAINER, MODULE)


def test_deferred_checks_come_every_check_every_steps():
    guard = FiniteLossGuard(check_every=4, defer=True)
    with pytest.raises(TrainingError, match="batch 3"):
        feed(guard, LOSSES)  # the check after step 4 finds step 3
    healthy = FiniteLossGuard(check_every=2, defer=True)
    feed(healthy, [1.0, 0.5, 0.25])
    healthy.on_validation_start(TRAINER, MODULE)
    healthy.on_train_epoch_end(TRAINER, MODULE)
