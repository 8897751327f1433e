"""Backbone factory: offline pretrained fails fast, local weights load, freezing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from mammo.core.errors import ConfigError
from mammo.data.scan import file_sha256
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


def fill_hub_cache(cache: Path, name: str = "test_efficientnet") -> tuple[str, Path, nn.Module]:
    """The local Hugging Face cache holding ``name``'s ImageNet weights (random here), as
    ``huggingface-cli download`` leaves it; returns (hub id, file, the model they came from)."""
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    folder = cache / f"models--{hub_id.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    source = timm.create_model(name, num_classes=0)
    path = folder / "snapshots" / revision / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return hub_id, path, source


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub with its own (empty) local cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_imagenet_weights_come_from_the_local_cache_and_are_recorded(hub_cache):
    hub_id, path, source = fill_hub_cache(hub_cache)
    found = backbones.weights_source("test_efficientnet", pretrained=True, weights=None)
    assert found == {
        "kind": "hub",
        "hub_id": hub_id,
        "file": "model.safetensors",
        "sha256": file_sha256(path),
    }
    model = create_backbone("test_efficientnet", pretrained=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name])


def test_missing_imagenet_weights_name_the_three_ways_on(hub_cache):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        backbones.weights_source("efficientnet_b0", pretrained=True, weights=None)
    said = str(info.value)
    assert "timm/efficientnet_b0.ra_in1k" in said and "\n" not in said
    for way in (
        "model.weights=<",
        "huggingface-cli download timm/efficientnet_b0.ra_in1k",
        "model.pretrained=false",
    ):
        assert way in said
    assert time.perf_counter() - start < 5
    assert backbones.weights_source("efficientnet_b0", pretrained=False, weights=None) == {"kind": "random"}


def test_another_models_image_encoder_loads_under_its_prefix(tmp_path):
    source = timm.create_model("test_efficientnet", num_classes=0)
    state = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}
    state["text_encoder.embed.weight"] = torch.zeros(3, 2)  # another part of the model: left alone
    path = tmp_path / "clip.pth"
    torch.save(state, path)
    model = create_backbone("test_efficientnet", weights=str(path), prefix="image_encoder.")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name])
    found = backbones.weights_source("test_efficientnet", False, str(path), "image_encoder.")
    assert found == {
        "kind": "file",
        "path": str(path.resolve()),
        "sha256": file_sha256(path),
        "prefix": "image_encoder.",
    }
    with pytest.raises(ConfigError, match=r"^model.weights_prefix='visual.': no key of .* starts with it$"):
        create_backbone("test_efficientnet", weights=str(path), prefix="visual.")
    with pytest.raises(ConfigError, match=r"^model.weights: .* lacks \d+ backbone tensor\(s\)"):
        create_backbone("test_resnet", weights=str(path), prefix="image_encoder.")


def test_a_run_records_where_its_weights_came_from(hub_cache, tmp_path, demo_root):
    import json

    from tests.conftest import train_tiny

    hub_id, path, _ = fill_hub_cache(hub_cache)
    run = train_tiny(tmp_path, demo_root, "epochs=1", "model.pretrained=true")
    recorded = json.loads((run / "summary.json").read_text())["model_config"]["weights_source"]
    sha = file_sha256(path)
    assert recorded == {"kind": "hub", "hub_id": hub_id, "file": "model.safetensors", "sha256": sha}
