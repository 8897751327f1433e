"""The density classifier: a timm backbone, a dropout + linear head, trained with one of the losses
below (``loss=ce|corn|emd``: cross-entropy, CORN or the squared EMD).

Validation keeps every image's logits so that the epoch's metrics (``mammo.evaluation.metrics``), the
best epoch's ``val_predictions.csv`` and ``metrics/val_metrics.*`` all come from the same numbers.

**The losses** (``loss=ce|corn|emd``): cross-entropy and two that know density is ordinal.

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

from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassCohenKappa

from mammo.core.errors import ConfigError
from mammo.distributed.collectives import gather_unique
from mammo.evaluation.metrics import confusion_matrix, density_metrics, short
from mammo.models.backbones import create_backbone, freeze


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


@dataclass
class ValOutputs:
    """One validation epoch: probabilities, targets, dataset row indices and their metrics."""

    probs: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    metrics: dict[str, float]
    confusion: list[list[int]]
    features: torch.Tensor | None = None  # pooled features per image (save_embeddings=true)


class DensityClassifier(L.LightningModule):
    """BI-RADS density classifier on a timm backbone.

    Args:
        arch: mammo's name of the architecture (``efficientnetb0``), used in paths and reports.
        backbone: timm model name.
        img_size: the run's input size, which a transformer backbone (ViT, DeiT, Swin) is built
            for (its position embeddings); a CNN takes any size.
        class_weights: the loss's weight per class, or ``None``.
        loss: ``ce``, ``corn`` or ``emd`` (the losses above); whichever it is, the
            model's output is one score per class whose softmax is the class probabilities.
        label_smoothing: cross-entropy's label smoothing.
        optimizer: called with the parameter groups (``conf/optimizer/``: a torch optimizer with
            ``_partial_: true``); ``None`` for a model that is not trained (inference).
        learning_rate: the head's learning rate (each group's ``lr``).
        backbone_lr_factor: the backbone learns at ``learning_rate * backbone_lr_factor``.
        scheduler: called with the optimizer (``conf/scheduler/``), stepped once per epoch.
        mean, std: per-channel normalisation the backbone expects (ImageNet's for timm models).
        embeddings_fusion: concatenate a precomputed embedding of each image (``embedding_dim``
            wide, from ``embeddings_dir``, see ``mammo.embed``) to the pooled features before the head.
        keep_val_features: keep each validation image's head input (``ValOutputs.features``).

    Inputs are preprocessed greyscale images ``[B, 1, H, W]`` in [0, 1] (any float dtype, as the
    data loaders and the cache give them); the model repeats them to 3 channels and normalises.
    """

    def __init__(
        self,
        arch: str,
        backbone: str,
        num_classes: int = 4,
        pretrained: bool = False,
        weights: str | None = None,
        weights_prefix: str | None = None,
        img_size: int | list[int] | None = None,
        dropout_rate: float = 0.2,
        freeze_backbone: bool = False,
        unfreeze_last_block: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        learning_rate: float = 1e-4,
        backbone_lr_factor: float = 1.0,
        scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
        class_weights: list[float] | None = None,
        mean: list[float] = (0.485, 0.456, 0.406),
        std: list[float] = (0.229, 0.224, 0.225),
        embeddings_fusion: bool = False,
        embeddings_dir: str | None = None,
        embedding_dim: int = 0,
        keep_val_features: bool = False,
        loss: str = "ce",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        # the factories are config nodes (the run's config.yaml has them), not checkpoint data
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.backbone = create_backbone(backbone, pretrained, weights, weights_prefix, img_size)
        freeze(self.backbone, freeze_backbone, unfreeze_last_block)
        if embeddings_fusion and embedding_dim <= 0:
            raise ConfigError("model.embeddings_fusion=true needs the embedding width (model.embeddings_dir)")
        width = self.backbone.num_features + (embedding_dim if embeddings_fusion else 0)
        self.criterion = make_loss(loss, label_smoothing)
        self.head = nn.Sequential(
            nn.Dropout(dropout_rate), nn.Linear(width, self.criterion.outputs(num_classes))
        )
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None], persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32)[None, :, None, None], persistent=False
        )
        # no argument validation: it reads the batch on the host (a GPU sync every step)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.train_kappa = MulticlassCohenKappa(num_classes, weights="quadratic", validate_args=False)
        self._val_steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_outputs: ValOutputs | None = None
        self.checkpoint_meta: dict = {}

    def on_fit_start(self) -> None:
        if self.device.type == "cuda":  # convolutions run faster on NHWC tensor cores
            self.to(memory_format=torch.channels_last)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1 or 3, H, W] images in [0, 1] -> the backbone's normalised 3-channel input."""
        return backbone_input(x, self.mean, self.std)

    def features(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input: pooled backbone features (+ the image's precomputed embedding)."""
        return self.combine(self.backbone(self.normalize(x)), embedding)

    def combine(self, pooled: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled backbone features -> the head's input (Grad-CAM starts from pooled features too)."""
        if self.hparams.embeddings_fusion:
            if embedding is None:
                raise ConfigError("model.embeddings_fusion=true but the batch carries no embeddings")
            pooled = torch.cat([pooled, embedding.to(pooled.dtype)], dim=1)
        return pooled

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """The head's input -> one score per class, whose softmax is the class probabilities."""
        return self.criterion.class_logits(self.head(features))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(self.features(x, embedding))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss (the losses above) of the class scores."""
        return self.criterion(logits, targets, self.class_weights)

    def sample_targets(self, labels: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The batch's targets, one per sample the model scores (here: per image)."""
        return labels

    def image_scores(self, scores: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """Scores per sample -> per image of the batch (here: the same)."""
        return scores

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, labels, _, *extra = batch
        logits = self(x, *extra)  # forward, which compile=true compiles
        y = self.sample_targets(labels, *extra)
        loss = self.loss(logits, y)
        self.train_acc(logits, y)
        self.train_kappa(logits, y)
        n = len(y)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True
        )
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        self.log("train_kappa", self.train_kappa, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, rows, *extra = batch
        features = self.features(x, *extra)
        logits = self.image_scores(self.scores(features).detach().float(), *extra)
        kept = None
        if self.hparams.keep_val_features:
            kept = self.image_scores(features.detach().float(), *extra).cpu()
        self._val_steps.append((logits, y, rows, kept))

    def on_validation_epoch_end(self) -> None:
        logits, targets, rows = (torch.cat(parts) for parts in list(zip(*self._val_steps))[:3])
        features = torch.cat([s[3] for s in self._val_steps]) if self.hparams.keep_val_features else None
        self._val_steps.clear()
        # under DDP: every rank's images, each once (the sampler pads shards with repeats)
        rows, logits, targets, features = gather_unique(rows, logits, targets, features)
        probs = logits.softmax(dim=1)
        metrics = density_metrics(probs, targets)
        self.val_outputs = ValOutputs(
            probs.cpu(), targets.cpu(), rows.cpu(), metrics, confusion_matrix(probs, targets), features
        )
        values = {"val_loss": float(self.loss(logits, targets)), **short(metrics, "val")}
        for name, value in values.items():
            # the same value on every rank (computed from the gathered outputs): "max" keeps it
            # exactly where Lightning syncs epoch-level values across ranks
            self.log(name, value, prog_bar=name in ("val_loss", "val_kappa"), sync_dist=True, reduce_fx="max")

    def configure_optimizers(self):
        hp = self.hparams
        if self.optimizer_factory is None:
            raise ConfigError("model.optimizer: this model was built without an optimizer (inference only)")
        head = [p for p in self.head_parameters() if p.requires_grad]
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        # the names are train_history's lr_<name> columns
        groups = [{"params": head, "lr": hp.learning_rate, "name": "head"}]
        if body:
            body_lr = hp.learning_rate * hp.backbone_lr_factor
            groups.append({"params": body, "lr": body_lr, "name": "backbone"})
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        schedule = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}

    def head_parameters(self) -> list[nn.Parameter]:
        """What learns at ``learning_rate`` (the backbone at ``backbone_lr_factor`` times it)."""
        return list(self.head.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # everything needed to rebuild the model and preprocess new images like the training data
        checkpoint["mammo"] = self.checkpoint_meta


def backbone_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[B, 1 or 3, H, W]`` images in [0, 1] -> the normalised 3-channel input a backbone expects
    (``mean`` and ``std`` shaped ``[1, 3, 1, 1]``)."""
    return (x.float().expand(-1, 3, -1, -1) - mean) / std
