"""Attention rollout (Abnar & Zuidema, 2020) of a ViT-like backbone: how much each patch of the
image flows into the pooled token through all of the model's attention layers.

Grad-CAM (:mod:`mammo.evaluation.gradcam`) says where the *predicted class* looks at the last
block; rollout says where the *model* looks across every block, whatever the class. Each block's
attention (averaged over heads, with the residual connection as an identity added and each row
renormalised) is multiplied through; the row of the token the head pools (the class token, or the
mean of the patch tokens for average or attention pooling) is laid on the patch grid.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def is_token_model(backbone) -> bool:
    """A ViT-like backbone (ViT, DeiT, ...): a sequence of blocks over patch tokens."""
    return (
        hasattr(backbone, "blocks")
        and hasattr(backbone, "num_prefix_tokens")
        and hasattr(backbone, "patch_embed")
    )


def has_attention(backbone) -> bool:
    """A token model whose blocks use timm's ``Attention`` (ViT, DeiT, ...): the attention
    weights can be captured, so rollout applies. Swin's windowed attention has no global map."""
    return is_token_model(backbone) and all(
        hasattr(getattr(block, "attn", None), "fused_attn") and hasattr(block.attn, "attn_drop")
        for block in backbone.blocks
    )


@contextmanager
def captured_attention(backbone):
    """Yield a list that fills with each block's attention weights ``[N, heads, T, T]`` as the
    backbone runs. timm computes them explicitly (not fused) while captured: the one reach-in,
    timm's public ``Attention.fused_attn`` switch and its ``attn_drop`` module, which the softmaxed
    weights pass through."""
    weights: list[torch.Tensor] = []
    saved = [block.attn.fused_attn for block in backbone.blocks]
    hooks = [
        block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: weights.append(out.detach()))
        for block in backbone.blocks
    ]
    for block in backbone.blocks:
        block.attn.fused_attn = False
    try:
        yield weights
    finally:
        for block, fused in zip(backbone.blocks, saved):
            block.attn.fused_attn = fused
        for hook in hooks:
            hook.remove()


def rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """The product of the blocks' attention, heads averaged and the residual added: ``[N, T, T]``,
    each row a distribution over the input tokens.

    Every token attending only to token 0: through each block, half of what token 1 holds
    passes the residual and half comes from token 0.

    >>> to_first = torch.tensor([[1.0, 0.0, 0.0]]).repeat(3, 1).expand(1, 2, 3, 3)  # 2 heads
    >>> rollout([to_first])[0, 1], rollout([to_first, to_first])[0, 1]
    (tensor([0.5000, 0.5000, 0.0000]), tensor([0.7500, 0.2500, 0.0000]))
    """
    flow = None
    for attention in weights:
        mixed = attention.float().mean(dim=1)
        mixed = mixed + torch.eye(mixed.shape[-1], device=mixed.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        flow = mixed if flow is None else mixed @ flow
    return flow


def attention_rollout(model, images: torch.Tensor) -> torch.Tensor:
    """Attention-rollout maps ``[N, H, W]`` in [0, 1] of ``images`` through ``model.backbone``
    (which must have attention: :func:`has_attention`), upsampled to the images' size."""
    backbone = model.backbone
    model.eval()
    with torch.no_grad(), captured_attention(backbone) as weights:
        backbone.forward_features(model.normalize(images))
    flow = rollout(weights)
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    pooled_by_class_token = prefix > 0 and getattr(backbone, "global_pool", "token") == "token"
    relevance = flow[:, 0, prefix:] if pooled_by_class_token else flow[:, prefix:, prefix:].mean(dim=1)
    height, width = backbone.patch_embed.grid_size
    return unit_maps(relevance.reshape(len(images), 1, height, width), images.shape[-2:])


def unit_maps(grid: torch.Tensor, size) -> torch.Tensor:
    """Maps ``[N, 1, h, w]`` on the feature grid as ``[N, H, W]`` at the image ``size``, each
    stretched to [0, 1]."""
    maps = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)
