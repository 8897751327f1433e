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


class RecordBatch(L.Callback):
    """Write where the first training batch is and how it is laid out (device, channels_last,
    the autocast dtype of the model's output) to ``path`` as JSON: what the GPU tests check."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.path.exists():
            return
        import json

        images = batch[0]
        with (
            torch.no_grad(),
            torch.autocast(images.device.type, enabled=images.is_cuda, dtype=torch.bfloat16),
        ):
            logits = pl_module(images[:1])
        self.path.write_text(
            json.dumps(
                {
                    "device": images.device.type,
                    "channels_last": images.is_contiguous(memory_format=torch.channels_last),
                    "logits_dtype": str(logits.dtype),
                    "precision": str(trainer.precision),
                    "pinned": trainer.datamodule.batch_memory.pinned,  # where the batch was read to
                }
            )
        )
