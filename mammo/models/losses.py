"""Training losses (``loss=ce|corn|emd``): cross-entropy and two that know density is ordinal.

Whatever the loss, the model's output is one score per class whose softmax is the class
probabilities (:meth:`Loss.class_logits` makes them from the head's outputs), so every metric,
interval, calibration, report and export reads the model the same way, and every loss is computed
from those scores (the training step calls the model as inference does, compiled or not):

- ``ce``: cross-entropy over the class logits (with ``label_smoothing``).
- ``corn``: CORN (Shi, Cao and Raschka, 2021, "Deep neural networks for rank-consistent ordinal
  regression based on conditional probabilities"). The head gives ``K - 1`` scores; score ``k``
  is the logit of P(y > k | y > k - 1), trained only on the images with y > k - 1. The class
  probabilities are the products of those conditional probabilities, so they are rank-consistent
  by construction; the class scores are their logarithms (computed in log space), from which the
  loss reads the conditional logits back: logit P(y > k | y > k - 1) = log P(y > k) - log P(y = k).
- ``emd``: the squared earth mover's distance between the predicted and the true class CDF (Hou,
  Yu and Samaras, 2016, "Squared earth mover's distance-based loss for training deep neural
  networks"): calling a D breast "A" costs 9 times what calling it "C" does.

Class weights (``class_weights``) weigh each image's term by its true class's weight, for every
loss.

>>> import torch
>>> corn = LOSSES["corn"]()
>>> corn.class_logits(torch.zeros(1, 3)).softmax(dim=1)  # each conditional probability 1/2
tensor([[0.5000, 0.2500, 0.1250, 0.1250]])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mammo.core.errors import ConfigError


class Loss:
    """What a loss asks of the head, how its outputs become class scores, and the loss itself."""

    name = ""

    def outputs(self, num_classes: int) -> int:
        """The head's width for ``num_classes`` classes."""
        return num_classes

    def class_logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """``[B, outputs]`` head outputs -> ``[B, K]`` class scores whose softmax is the class
        probabilities."""
        return outputs

    def __call__(
        self, scores: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean loss of ``[B, K]`` class scores for 0-based ``targets``, each image weighted
        by its class's ``weight``."""
        raise NotImplementedError


class CrossEntropy(Loss):
    name = "ce"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, scores, targets, weight=None):
        return F.cross_entropy(scores, targets, weight=weight, label_smoothing=self.label_smoothing)


class Corn(Loss):
    name = "corn"

    def outputs(self, num_classes: int) -> int:
        return num_classes - 1

    def class_logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """log P(y = k): ``log P(y > k - 1) + log P(y <= k | y > k - 1)``, the last class
        ``log P(y > K - 2)``."""
        outputs = outputs.float()
        above = torch.cumsum(F.logsigmoid(outputs), dim=1)  # log P(y > k), k = 0..K-2
        reached = F.pad(above, (1, 0))  # log P(y > k - 1), k = 0..K-1 (P(y > -1) = 1)
        stop = F.pad(F.logsigmoid(-outputs), (0, 1))  # log P(y <= k | y > k - 1); 0 for the last
        return reached + stop

    @staticmethod
    def task_logits(scores: torch.Tensor) -> torch.Tensor:
        """Class scores -> the ``K - 1`` conditional logits (the inverse of :meth:`class_logits`)."""
        log_p = scores.float().log_softmax(dim=1)
        at_least = torch.logcumsumexp(log_p.flip(1), dim=1).flip(1)  # log P(y >= k)
        return at_least[:, 1:] - log_p[:, :-1]  # log P(y > k) - log P(y = k)

    def __call__(self, scores, targets, weight=None):
        outputs = self.task_logits(scores)
        tasks = torch.arange(outputs.shape[1], device=outputs.device)
        asked = (targets[:, None] >= tasks).to(outputs.dtype)  # task k sees the images with y > k - 1
        above = (targets[:, None] > tasks).to(outputs.dtype)
        terms = F.binary_cross_entropy_with_logits(outputs, above, reduction="none") * asked
        per_image = weight[targets][:, None] if weight is not None else torch.ones_like(terms[:, :1])
        return (terms * per_image).sum() / (asked * per_image).sum().clamp_min(1e-12)


class SquaredEMD(Loss):
    name = "emd"

    def __call__(self, scores, targets, weight=None):
        probs = scores.float().softmax(dim=1)
        truth = F.one_hot(targets, probs.shape[1]).to(probs.dtype)
        distance = (probs.cumsum(dim=1) - truth.cumsum(dim=1)).pow(2).sum(dim=1)
        if weight is None:
            return distance.mean()
        per_image = weight[targets].to(distance.dtype)
        return (distance * per_image).sum() / per_image.sum()


LOSSES = {loss.name: loss for loss in (CrossEntropy, Corn, SquaredEMD)}


def make_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    """The loss called ``name`` (``loss=ce|corn|emd``); label smoothing is cross-entropy's."""
    if name not in LOSSES:
        raise ConfigError(f"loss={name!r}: expected one of {', '.join(LOSSES)}")
    if name == "ce":
        return CrossEntropy(label_smoothing)
    if label_smoothing:
        raise ConfigError(f"label_smoothing={label_smoothing}: it applies to loss=ce only (loss={name})")
    return LOSSES[name]()
