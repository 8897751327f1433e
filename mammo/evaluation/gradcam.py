"""Grad-CAM on the backbone's last feature map (a transformer's token map), and the figures made
of it (with attention rollout beside it for a model with attention)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from mammo.data.units import UnitDataset
from mammo.evaluation.attention import attention_rollout, has_attention, is_token_model, unit_maps

log = logging.getLogger("mammo")


def gradcam(model, images: torch.Tensor, targets: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps ``[N, H, W]`` in [0, 1] of ``images`` for the ``targets`` classes, one per
    sample the model scores (``extra``: the fused embeddings, or a multi-view model's assignment
    of images to units, each of whose views then gets the map of its unit's class).

    The target layer is the backbone's last feature map (timm ``forward_features``: ResNet's
    layer4, EfficientNet's final conv stage), the layer whose pooling feeds the head — also in the
    fusion model, where the embedding joins after pooling, and in the multi-view model, where the
    views are fused after pooling. Gradients are enabled locally.
    """
    model.eval()
    if is_token_model(model.backbone):
        features, grad = last_block_input_and_gradient(model, images, targets, *extra)
    else:
        # the gradient is wanted at the feature map only: no backward through the backbone
        with torch.no_grad():
            features = model.backbone.forward_features(model.normalize(images))
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            pooled = model.backbone.forward_head(features, pre_logits=True)
            score = model.scores(model.combine(pooled, *extra)).gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(score, features)
    feature_map, grad = (spatial_map(t, model.backbone) for t in (features, grad))
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feature_map).sum(dim=1, keepdim=True)).detach()
    return unit_maps(cam, images.shape[-2:])


def last_block_input_and_gradient(model, images, targets, *extra) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens entering a ViT's last block and the target scores' gradient there: a model that
    pools its class token passes no gradient to the patch tokens at its output, while the last
    block's attention does (Grad-CAM for transformers, as pytorch-grad-cam takes it)."""
    entering = {}

    def leaf(module, args):
        entering["tokens"] = args[0].detach().requires_grad_(True)
        return (entering["tokens"], *args[1:])

    handle = model.backbone.blocks[-1].register_forward_pre_hook(leaf)
    try:
        with torch.enable_grad():
            features = model.backbone.forward_features(model.normalize(images))
            pooled = model.backbone.forward_head(features, pre_logits=True)
            score = model.scores(model.combine(pooled, *extra)).gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(score, entering["tokens"])
    finally:
        handle.remove()
    return entering["tokens"].detach(), grad


def spatial_map(features: torch.Tensor, backbone) -> torch.Tensor:
    """A backbone's ``forward_features`` as ``[N, C, h, w]``: a CNN's map as it is, a Swin-like
    ``NHWC`` map permuted, a ViT's tokens without its class (and register) tokens laid out on the
    patch grid: Grad-CAM over the token map.

    >>> import timm
    >>> vit = timm.create_model("test_vit", num_classes=0, img_size=(96, 64))
    >>> spatial_map(vit.forward_features(torch.zeros(1, 3, 96, 64)), vit).shape
    torch.Size([1, 64, 6, 4])
    """
    if features.ndim == 4:
        return features.permute(0, 3, 1, 2) if getattr(backbone, "output_fmt", "NCHW") == "NHWC" else features
    tokens = features[:, getattr(backbone, "num_prefix_tokens", 0) :]
    height, width = backbone.patch_embed.grid_size
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


EXPLANATIONS = {
    "gradcam_samples.png": ("Grad-CAM", "last backbone feature map"),
    "attention_rollout.png": ("Attention rollout", "all attention layers"),
}
"""The explanation figures under ``plots/``: the method's name and what it shows."""


def explanation_figures(model, dataset, table, class_labels: list, per_class: int, plots: Path) -> dict:
    """``plots/gradcam_samples.png`` and, for a model with attention (ViT, DeiT),
    ``plots/attention_rollout.png`` of the same samples; returns ``{path: panels}``."""
    methods = {"gradcam_samples.png": gradcam}
    if has_attention(model.backbone):
        methods["attention_rollout.png"] = lambda m, images, targets, *extra: attention_rollout(m, images)
    figures = {}
    for name, explain in methods.items():
        title = "{} ({})".format(*EXPLANATIONS[name])
        path = plots / name
        figures[path] = gradcam_figure(model, dataset, table, class_labels, per_class, path, explain, title)
    return figures


def gradcam_figure(
    model, dataset, table, class_labels: list, per_class: int, path: Path, explain=gradcam, title=None
) -> int:
    """``per_class`` samples of each true class (images; a multi-view model's breasts or exams,
    each view in a panel of its own) with their ``explain`` overlay (Grad-CAM by default); returns
    the number of panels. A constant map (what a wrong target layer gives) is logged as a warning."""
    matplotlib.use("Agg")
    picks = [
        int(i) for c in range(len(class_labels)) for i in np.flatnonzero(dataset.labels == c)[:per_class]
    ]
    if not picks:
        return 0
    images, labels, rows, *extra = dataset.__getitems__(picks)
    device = next(model.parameters()).device  # fp32 wherever the model is (Grad-CAM needs gradients)
    on_device = [images.to(device), *(e.to(device) for e in extra)]
    with torch.no_grad():  # not inference_mode: these tensors take part in Grad-CAM's backward
        predicted = model(*on_device).argmax(1)
    maps = explain(model, on_device[0], predicted, *on_device[1:]).cpu()
    predicted = predicted.cpu()
    if isinstance(dataset, UnitDataset):  # each view under its unit's label and prediction
        sample = extra[0].argmax(dim=0)
        predicted, labels = predicted[sample], torch.from_numpy(dataset.labels[picks])[sample]
        shown = table.loc[rows.numpy()]
        views = [f"{side} {view} · " for side, view in zip(shown["laterality"], shown["view"])]
    else:
        views = [""] * len(images)
    flat = [k for k in range(len(maps)) if float(maps[k].max() - maps[k].min()) < 1e-6]
    if flat:
        log.warning("%s map is constant for %d of %d image(s)", title or "Grad-CAM", len(flat), len(maps))
    cols = min(len(images), max(per_class, 1) * (len(images) // len(picks)))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(images)]):
        ax.imshow(images[k, 0].float().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.imshow(maps[k].numpy(), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(
            f"{views[k]}true {class_labels[int(labels[k])]} / pred {class_labels[int(predicted[k])]}",
            fontsize=8,
        )
    fig.suptitle(title or "Grad-CAM", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(images)


def gradcam_samples(model, datamodule, model_path: Path, run_dir: Path, per_class: int) -> dict:
    """A training run's ``plots/gradcam_samples.png`` (and ``attention_rollout.png`` for a model
    with attention): ``per_class`` validation images per class, with the best epoch's weights
    (``best_model.pt``) loaded into ``model``; returns ``{path: panels}``."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    model.cpu().eval()
    dataset = datamodule.dataset(datamodule.val_table)
    return explanation_figures(
        model, dataset, datamodule.val_table, datamodule.samples.class_labels, per_class, run_dir / "plots"
    )
