"""Where inference runs (``device=auto|cpu|cuda`` of embed, predict and evaluate), and how.

On a CUDA GPU: the model in ``channels_last``, batches copied from pinned memory without
blocking, and bf16 autocast where the GPU supports it. On the CPU nothing changes: fp32,
the default memory format, the same results as before.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from mammo.core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(setting: str) -> torch.device:
    """``auto``: the GPU when one is visible, else the CPU; ``cuda`` without one is an error."""
    if setting not in DEVICES:
        raise ConfigError(f"device={setting!r}: expected one of {', '.join(DEVICES)}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); use auto or cpu"
        )
    return torch.device(
        "cuda" if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()) else "cpu"
    )


def for_inference(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in eval mode on ``device`` (channels_last on a GPU)."""
    model = model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``: non-blocking from pinned memory, channels_last for images on a GPU."""
    if device.type != "cuda":
        return batch
    batch = batch.to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch


def autocast(device: torch.device):
    """bf16 autocast on a GPU that has it; nothing on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def pin_memory(device: torch.device) -> bool:
    """Whether loaders feeding ``device`` should pin their batches."""
    return device.type == "cuda"
