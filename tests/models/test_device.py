"""Where inference runs (mammo.models.device): the CPU path is unchanged, a missing GPU is one line."""

from __future__ import annotations

import pytest
import torch

from mammo.core.errors import ConfigError
from mammo.models.device import autocast, for_inference, pin_memory, resolve_device, to_device


def test_auto_is_the_gpu_when_one_is_visible_else_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^device=cuda: no CUDA GPU is visible .* use auto or cpu$"):
        resolve_device("cuda")


def test_an_unknown_device_names_the_options():
    with pytest.raises(ConfigError, match="device='tpu': expected one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_on_the_cpu_inference_is_exactly_as_before():
    cpu = torch.device("cpu")
    model = torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(2, 1, 8, 8)
    expected = model(x)
    prepared = for_inference(model, cpu)
    with autocast(cpu):
        got = prepared(to_device(x, cpu))
    assert got.dtype == torch.float32 and torch.equal(got, expected) and not pin_memory(cpu)
    assert to_device(x, cpu) is x and not prepared.training
