"""Checkpoint files written in place atomically (Lightning's ``CheckpointIO`` plugin).

Lightning's own writer stages the file in the system's temporary folder and moves it over: across
file systems that is a copy, and a full disk leaves ``checkpoints/last.ckpt`` truncated, losing
the resume point. Here every checkpoint (``last.ckpt``, ``best_model.pt``) is written to a
temporary file in its own folder, flushed to disk and renamed into place: the previous
checkpoint survives any failure, which is reported as one line naming the file.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mammo.artifacts.io import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are all-or-nothing (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()  # serialised first: a failing write is then an OSError naming the disk's
        torch.save(checkpoint, buffer)  # problem, not torch's "PytorchStreamWriter failed" RuntimeError
        with atomic_open(path, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
