"""Backbone factory: offline pretrained fails fast, local weights load, freezing."""

from __future__ import annotations

import time

import pytest
import timm
import torch

from mammo.core.errors import ConfigError
from mammo.models import backbones
from mammo.models.backbones import create_backbone, freeze


def test_pretrained_offline_fails_fast_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="model.pretrained=true.*model.weights=<path>"):
        create_backbone("efficientnet_b0", pretrained=True)
    assert time.perf_counter() - start < 5


def test_unreachable_hub_is_detected_within_seconds(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="unreachable"):
        create_backbone("efficientnet_b0", pretrained=True)
    assert time.perf_counter() - start < backbones.HUB_PROBE_TIMEOUT_S + 5
    assert constants.HF_HUB_OFFLINE is False  # restored


def test_local_timm_weights_load(tmp_path):
    source = timm.create_model("test_efficientnet", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("test_efficientnet", weights=str(path))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name])


def test_mammo_checkpoint_weights_load(tmp_path):
    source = create_backbone("test_efficientnet")
    path = tmp_path / "best_model.pt"
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.1.weight"] = torch.zeros(4, source.num_features)
    torch.save({"state_dict": state, "mammo": {"arch": "tiny"}}, path)
    model = create_backbone("test_efficientnet", weights=str(path))
    torch.testing.assert_close(model.conv_stem.weight, source.conv_stem.weight)


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(ConfigError, match="model.weights"):
        create_backbone("test_efficientnet", weights=str(path))
    with pytest.raises(ConfigError, match="file not found"):
        create_backbone("test_efficientnet", weights=str(tmp_path / "nope.pth"))


def test_freeze_keeps_last_block_trainable():
    model = create_backbone("test_efficientnet")
    freeze(model, freeze_backbone=True, unfreeze_last_block=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.4.", "conv_head", "bn2")) for n in trainable)
    assert any(n.startswith("conv_head") for n in trainable)
    freeze(model, freeze_backbone=True, unfreeze_last_block=False)
    assert not any(p.requires_grad for p in model.parameters())
