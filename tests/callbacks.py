"""Callbacks that only tests add, through the config like any callback:
``+callbacks.inject_nan._target_=tests.callbacks.InjectNaN +callbacks.inject_nan.step=3``."""

from __future__ import annotations

import lightning as L
import torch


class InjectNaN(L.Callback):
    """Poison the head's weights before global step ``step`` so that the training loss becomes
    NaN there; exercises the divergence path end to end."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step + 1 == self.step:
            with torch.no_grad():
                next(pl_module.head.parameters()).fill_(float("nan"))
