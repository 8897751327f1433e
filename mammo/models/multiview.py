"""The multi-view model (``model=multiview``): one prediction per breast or exam from all its views.

One timm backbone, shared by every view, encodes each image of a unit; the pooled features of a
unit's views are fused into one vector, and the density head scores it. The batch says which
images make a unit (``assignment`` ``[B, N]``, :class:`mammo.data.units.UnitDataset`), so a
breast with only a CC image is a unit of one view, and an exam of five images a unit of five.

Fusions (``model.fusion``), each over the views a unit has, in any order:

- ``mean``: the mean of the views' features.
- ``max``: their per-feature maximum (a dense finding in either view shows).
- ``attention``: a weighted mean, the weights a softmax over the views of a learned score of each
  view's features (Ilse et al., 2018, attention-based multiple-instance pooling): the model
  learns which view to trust for each unit.

Training uses the unit's label (its images' label; an exam's, its denser breast's); validation
scores each unit once and gives every image of it that unit's scores, so the run's
``val_predictions.csv`` has one row per image as every run's, each holding its unit's
prediction, and the breast (exam) level made from it is the model's own.
"""

from __future__ import annotations

import torch
from torch import nn

from mammo.core.errors import ConfigError
from mammo.data.units import check_unit, per_image
from mammo.models.classifier import DensityClassifier

FUSIONS = ("mean", "max", "attention")


def check_multiview_settings(unit: str, fusion: str) -> None:
    """``model.unit`` and ``model.fusion``, checked before any work (one line naming the key)."""
    check_unit(unit)
    check_fusion(fusion)


def check_fusion(fusion: str) -> None:
    if fusion not in FUSIONS:
        raise ConfigError(f"model.fusion={fusion!r}: expected one of {', '.join(FUSIONS)}")


class ViewFusion(nn.Module):
    """``[N, D]`` view features and an ``[B, N]`` assignment -> ``[B, D]`` unit features."""

    def __init__(self, mode: str, width: int) -> None:
        super().__init__()
        check_fusion(mode)
        self.mode = mode
        self.score = nn.Linear(width, 1) if mode == "attention" else None

    def forward(self, features: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        member = assignment > 0
        if self.mode == "max":
            return torch.where(member[..., None], features[None], float("-inf")).amax(dim=1)
        if self.mode == "mean":
            weights = member.to(features.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
        else:
            scores = self.score(features)[:, 0].to(features.dtype)
            weights = torch.where(member, scores[None], float("-inf")).softmax(dim=1)
        return weights @ features


class MultiViewClassifier(DensityClassifier):
    """A :class:`~mammo.models.classifier.DensityClassifier` whose samples are breasts or exams.

    Args:
        unit: ``breast`` (a side's CC and MLO images) or ``exam`` (up to four views, both sides).
        fusion: ``mean``, ``max`` or ``attention`` (see the module docstring).
        **kwargs: the image-level classifier's arguments (backbone, loss, optimizer, ...).

    ``forward(images [N, 1, H, W], assignment [B, N])`` gives ``[B, K]`` class scores; without an
    assignment each image is a unit of its own.
    """

    def __init__(self, *args, unit: str = "breast", fusion: str = "attention", **kwargs) -> None:
        check_multiview_settings(unit, fusion)
        if kwargs.get("embeddings_fusion"):
            raise ConfigError(
                "model=multiview: embeddings fusion is for image-level models (model.embeddings_fusion)"
            )
        super().__init__(*args, **kwargs)
        self.fusion = ViewFusion(fusion, self.backbone.num_features)

    def combine(self, pooled: torch.Tensor, assignment: torch.Tensor | None = None) -> torch.Tensor:
        if assignment is None:
            return pooled
        return self.fusion(pooled, assignment.to(pooled.device))

    def sample_targets(self, labels: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Each unit's label: the maximum of its images' (they agree within a breast)."""
        return torch.where(assignment > 0, labels[None], -1).amax(dim=1)

    def image_scores(self, scores: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Each image gets its unit's scores."""
        return per_image(scores, assignment)

    def head_parameters(self) -> list[nn.Parameter]:
        """The fusion learns with the head."""
        return [*self.head.parameters(), *self.fusion.parameters()]
