"""The Rich progress bar counts epochs as run.log does."""

from __future__ import annotations

import io
import re

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from mammo.artifacts.progress import EpochProgressBar


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_train_bar_reads_epoch_n_of_max_epochs(tmp_path):
    screen = io.StringIO()
    bar = EpochProgressBar(console_kwargs={"file": screen, "force_terminal": True, "width": 120})
    loader = DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=3, callbacks=[bar], logger=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(Linear(), loader, loader)
    shown = screen.getvalue()
    assert "Epoch 1/3" in shown and "Epoch 3/3" in shown
    assert "Epoch 0/" not in shown and "Epoch 2/2" not in shown  # Lightning's zero-based count
    assert re.findall(r"Epoch \d+/\d+", shown)[-1] == "Epoch 3/3"  # the last frame drawn
