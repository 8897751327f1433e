"""timm backbone factory: offline-safe pretrained weights, local weight files, freezing.

Where a backbone's starting weights come from (:func:`weights_source`) is checked before any data
work and recorded in summary.json (``model_config.weights_source``): timm's ImageNet weights from
the Hugging Face hub or its local cache (hub id, file and SHA-256), a local file (path and SHA-256),
or random initialisation.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from mammo.core.errors import ConfigError, first_line
from mammo.data.scan import file_sha256

HUB_PROBE_TIMEOUT_S = 3.0
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm reads a hub model's weights from, the safetensors one first."""


def weights_source(name: str, pretrained: bool, weights: str | None, prefix: str | None = None) -> dict:
    """Where the backbone ``name`` starts from, checked in seconds: ``{"kind": "random"}``, a local
    ``file`` (path, SHA-256, the key ``prefix`` stripped), or timm's ImageNet weights from the
    ``hub`` (its id; the cached file and its SHA-256 once it is in the local cache). ImageNet
    weights neither in the cache nor reachable stop here with one line naming the three ways on."""
    if pretrained and weights:
        raise ConfigError("model.pretrained=true and model.weights=<file> exclude each other")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"model.weights: file not found: {path}")
        found = {"kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}
        return {**found, "prefix": prefix} if prefix else found
    if not pretrained:
        return {"kind": "random"}
    pretrained_cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    hub_id = pretrained_cfg.hf_hub_id if pretrained_cfg is not None else None
    if not hub_id:
        raise ConfigError(
            f"model.pretrained=true: timm has no ImageNet weights for {name!r}; give a file with "
            "model.weights=<path> or train from scratch with model.pretrained=false"
        )
    cached = cached_hub_file(hub_id)
    if cached is not None:
        return {"kind": "hub", "hub_id": hub_id, "file": cached.name, "sha256": file_sha256(cached)}
    if hub_reachable():
        return {"kind": "hub", "hub_id": hub_id, "file": None, "sha256": None}  # downloaded when built
    raise ConfigError(
        f"model.pretrained=true: the ImageNet weights of {name!r} ({hub_id}) are not in the local "
        "Hugging Face cache and the hub is unreachable. Three ways on: model.weights=<a local weights "
        f"file>; fill the cache where the hub is reachable (huggingface-cli download {hub_id}, "
        "then copy ~/.cache/huggingface here or set HF_HOME); or model.pretrained=false (random "
        "weights: far behind on a few thousand mammograms)"
    )


def cached_hub_file(hub_id: str) -> Path | None:
    """The weights file of ``hub_id`` in the local Hugging Face cache, ``None`` when absent."""
    from huggingface_hub import try_to_load_from_cache

    for filename in HUB_FILES:
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_reachable() -> bool:
    """Whether the Hugging Face hub may be asked (not offline, and it answers within seconds)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    prefix: str | None = None,
    img_size: int | tuple[int, int] | None = None,
) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``: forward returns pooled features).

    Args:
        name: timm model name, e.g. ``efficientnet_b0``, ``resnet50``, ``test_efficientnet``.
        pretrained: load timm's ImageNet weights (from the local Hugging Face cache when the hub
            is unreachable; fails within seconds with a clear message if they are not there).
        weights: a local file (timm/torchvision state dict, or a mammo ``best_model.pt``) whose
            backbone weights are loaded instead.
        prefix: with ``weights``, the key prefix of the backbone's tensors in the file (e.g.
            ``image_encoder.`` of another model's image encoder): only those, stripped of it.
        img_size: the input size (side, or ``(height, width)``) for the models built for one
            (ViT, DeiT, Swin: their position embeddings, resampled from the pretrained ones).
    """
    if not timm.is_model(name):
        raise ConfigError(f"model.backbone={name!r}: unknown timm model")
    if pretrained and weights:
        raise ConfigError("model.pretrained=true and model.weights=<file> exclude each other")
    if pretrained:
        with _offline_unless_hub_reachable() as offline:
            try:
                model = timm_model(name, True, img_size)
            except Exception as exc:
                where = "is unreachable and they are not in the local cache" if offline else "failed"
                raise ConfigError(
                    f"model.pretrained=true: downloading the ImageNet weights of {name!r} from the "
                    f"Hugging Face hub {where} ({type(exc).__name__}). Pass a local file with "
                    "model.weights=<path> or train from scratch with model.pretrained=false"
                ) from exc
        return model
    model = timm_model(name, False, img_size)
    if weights:
        load_backbone_weights(model, weights, prefix)
    return model


def timm_model(name: str, pretrained: bool, img_size) -> nn.Module:
    """``timm.create_model`` without a classifier, at ``img_size`` where the model is built for an
    input size (transformers; a CNN takes any size and has no such argument)."""
    if img_size is not None:
        size = (
            (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
        )
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=size)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=pretrained, num_classes=0)


@contextmanager
def _offline_unless_hub_reachable():
    """Put huggingface_hub in offline mode when its endpoint does not answer within seconds.

    Without this, an unreachable hub costs about a minute of retries before timm gives up.
    """
    from huggingface_hub import constants

    if constants.is_offline_mode():
        yield True
        return
    if hub_reachable():
        yield False
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = saved


def read_torch_file(path: str | Path, key: str):
    """``torch.load`` (weights only, on CPU) with one-line errors naming the config ``key``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{key}: cannot read {path} as weights only ({load_failure(exc)})") from exc


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line: the unpickler's own
    reason (e.g. ``Unsupported global: GLOBAL numpy...`` or ``unsupported GLOBAL posix.system``)
    rather than torch's advice to load it unsafely."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(" was not an allowed")[0]
        if "GLOBAL" in line:
            return line.rstrip(".")
    return first_line(exc)


def load_backbone_weights(model: nn.Module, path: str | Path, prefix: str | None = None) -> None:
    """Load backbone weights from a state-dict file (with ``prefix``: only the keys under it,
    stripped of it); classifier-head keys are ignored."""
    state = read_torch_file(path, "model.weights")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights: {path} holds no state dict")
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ConfigError(f"model.weights_prefix={prefix!r}: no key of {path} starts with it")
    # mammo checkpoints prefix backbone keys with "backbone."; plain timm files have none
    elif any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"model.weights: no tensor in {path} fits this backbone")
    missing = [k for k in own if k not in usable]
    if missing:
        raise ConfigError(
            f"model.weights: {path} lacks {len(missing)} backbone tensor(s), e.g. {missing[:3]}"
        )
    model.load_state_dict(usable, strict=False)


def freeze(model: nn.Module, freeze_backbone: bool, unfreeze_last_block: bool) -> None:
    """Freeze the backbone; with ``unfreeze_last_block`` its last stage and the layers after it
    (e.g. EfficientNet's ``blocks.6`` + ``conv_head``, ResNet's ``layer4``) stay trainable."""
    if not freeze_backbone:
        return
    params = list(model.named_parameters())
    start = len(params)
    if unfreeze_last_block:
        last_stage = model.feature_info[-1]["module"] + "."
        start = next(i for i, (name, _) in enumerate(params) if name.startswith(last_stage))
    for i, (_, param) in enumerate(params):
        param.requires_grad = i >= start
