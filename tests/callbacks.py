"""Callbacks that only tests add, through the config like any callback:
``+callbacks.inject_nan._target_=tests.callbacks.InjectNaN +callbacks.inject_nan.step=3``."""

from __future__ import annotations

from pathlib import Path

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


class InterruptOnce(L.Callback):
    """Ctrl-C as epoch ``epoch`` starts (the epochs before it saved), once: ``marker`` is written
    then, so that the resumed run, which keeps this callback in its config, trains to the end."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = int(epoch), Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch and not self.marker.exists():
            self.marker.touch()
            raise KeyboardInterrupt
