"""Checkpoints are all-or-nothing: a full disk keeps the previous file whole."""

from __future__ import annotations

import pytest
import torch

from mammo.artifacts.checkpoint_io import AtomicCheckpointIO
from mammo.core.errors import OutputError
from tests.conftest import fill


def test_a_checkpoint_that_does_not_fit_keeps_the_previous_one(small_disk):
    io = AtomicCheckpointIO()
    path = small_disk / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(10)}, path)
    fill(small_disk)
    with pytest.raises(OutputError) as info:
        io.save_checkpoint({"epoch": 2, "w": torch.ones(1_000_000)}, path)
    assert str(info.value) == f"{path}: cannot write: No space left on device"
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 1 and torch.equal(saved["w"], torch.ones(10))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_checkpoints_load_as_lightning_writes_them(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"a": torch.arange(3)}}, tmp_path / "x" / "best_model.pt")
    assert torch.equal(
        io.load_checkpoint(tmp_path / "x" / "best_model.pt")["state_dict"]["a"], torch.arange(3)
    )
