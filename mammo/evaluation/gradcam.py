"""Grad-CAM on the backbone's last feature map, and the figures made of it."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("mammo")


def gradcam(
    model, images: torch.Tensor, targets: torch.Tensor, embedding: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM maps ``[B, H, W]`` in [0, 1] for the ``targets`` classes.

    The target layer is the backbone's last feature map (timm ``forward_features``: ResNet's
    layer4, EfficientNet's final conv stage), the layer whose pooling feeds the head — also in the
    fusion model, where the embedding joins after pooling. Gradients are enabled locally.
    """
    model.eval()
    with torch.no_grad():  # the gradient is wanted at the feature map only: no backward through the backbone
        feature_map = model.backbone.forward_features(model.normalize(images))
    feature_map = feature_map.detach().requires_grad_(True)
    with torch.enable_grad():
        pooled = model.backbone.forward_head(feature_map, pre_logits=True)
        if model.hparams.embeddings_fusion:
            pooled = torch.cat([pooled, embedding.to(pooled.dtype)], dim=1)
        logits = model.scores(pooled)
        logits.gather(1, targets[:, None]).sum().backward()
    weights = feature_map.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feature_map).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    high = cam.amax(dim=(1, 2), keepdim=True)
    return (cam - low) / (high - low).clamp_min(1e-12)


def gradcam_figure(model, dataset, table, class_labels: list, per_class: int, path: Path) -> int:
    """``per_class`` images of each true class with their Grad-CAM overlay; returns the count.
    A constant map (what a wrong target layer gives) is logged as a warning."""
    matplotlib.use("Agg")
    picks = [
        int(i)
        for c in range(len(class_labels))
        for i in np.flatnonzero(table["label"].to_numpy() == c)[:per_class]
    ]
    if not picks:
        return 0
    images, labels, _, *embedding = dataset.__getitems__(picks)
    device = next(model.parameters()).device  # fp32 wherever the model is (Grad-CAM needs gradients)
    on_device = [images.to(device), *(e.to(device) for e in embedding)]
    with torch.no_grad():  # not inference_mode: these tensors take part in Grad-CAM's backward
        predicted = model(*on_device).argmax(1)
    maps = gradcam(model, *on_device[:1], predicted, *(on_device[1:] or [None])).cpu()
    predicted = predicted.cpu()
    flat = [k for k in range(len(maps)) if float(maps[k].max() - maps[k].min()) < 1e-6]
    if flat:
        log.warning("Grad-CAM map is constant for %d of %d image(s)", len(flat), len(maps))
    cols = min(len(picks), max(per_class, 1))
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(picks)]):
        ax.imshow(images[k, 0].float().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.imshow(maps[k].numpy(), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(
            f"true {class_labels[int(labels[k])]} / pred {class_labels[int(predicted[k])]}", fontsize=8
        )
    fig.suptitle("Grad-CAM (last backbone feature map)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(picks)


def gradcam_samples(model, datamodule, model_path: Path, run_dir: Path, per_class: int) -> tuple[int, Path]:
    """A training run's ``plots/gradcam_samples.png``: ``per_class`` validation images per class,
    with the best epoch's weights (``best_model.pt``) loaded into ``model``."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    model.cpu().eval()
    dataset = datamodule.dataset(datamodule.val_table)
    path = run_dir / "plots" / "gradcam_samples.png"
    count = gradcam_figure(
        model, dataset, datamodule.val_table, datamodule.samples.class_labels, per_class, path
    )
    return count, path
