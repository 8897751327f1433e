"""Load a mammo ``best_model.pt``: the model, and how its inputs were preprocessed."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from mammo.core.errors import ConfigError
from mammo.data.units import per_image
from mammo.models.backbones import read_torch_file
from mammo.models.classifier import DensityClassifier
from mammo.models.multiview import MultiViewClassifier


@dataclass
class Checkpoint:
    """A trained model and its ``mammo`` metadata (class labels, preprocessing, run)."""

    path: Path
    model: object
    meta: dict

    @property
    def class_labels(self) -> list[int]:
        return list(self.meta["class_labels"])

    @property
    def preprocessing(self) -> dict:
        """The Preprocessing settings the model was trained with (without the pipeline version;
        checkpoints from before ``j2k_reduce`` and ``box_reduce`` decoded and resized in full)."""
        settings = {k: v for k, v in self.meta["preprocessing"].items() if k != "pipeline_version"}
        return {"j2k_reduce": False, "box_reduce": False, **settings}

    @property
    def temperature(self) -> float:
        """The temperature scaling fitted after training (``calibrate=temperature``), else 1."""
        return float(self.meta.get("temperature", 1.0))

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def explained(self):
        """The model Grad-CAM explains."""
        return self.model

    def probabilities(self, images, views=None, assignment=None):
        """``[B, K]`` probabilities of a batch on the model's device, per image (``views``: each
        image's view, which only a per-view ensemble reads; ``assignment``: which unit each image
        belongs to, ``[U, B]``, for a multi-view model, whose units' probabilities each of their
        images gets)."""
        if self.unit is None:
            return (self.model(images).float() / self.temperature).softmax(dim=1)
        if assignment is None:
            raise ConfigError(f"{self.path}: a {self.unit}-level model needs each image's {self.unit}")
        scores = self.model(images, assignment.to(images.device)).float() / self.temperature
        return per_image(scores.softmax(dim=1), assignment)

    @property
    def unit(self) -> str | None:
        """What the model predicts: ``breast`` or ``exam`` (``model=multiview``), ``None``: images."""
        hparams = getattr(self.model, "hparams", None) or {}
        return hparams.get("unit")

    routes_views = False  # a per-view ensemble routes each image to the members of its view

    @property
    def members(self) -> list[Checkpoint]:
        """The checkpoints it predicts with: itself (an ensemble: its members)."""
        return [self]

    def record(self) -> dict:
        """What summary.json adds for it: nothing for one checkpoint without augmentations."""
        return {}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the :class:`~mammo.models.classifier.DensityClassifier` (or the multi-view
    :class:`~mammo.models.multiview.MultiViewClassifier`) of a ``best_model.pt`` (eval mode)."""
    path = Path(path)
    ckpt = read_torch_file(path, "ckpt")
    if "mammo" not in ckpt or "preprocessing" not in ckpt.get("mammo", {}):
        raise ConfigError(f"ckpt: {path} is not a mammo best_model.pt (no preprocessing metadata)")
    saved = ckpt["hyper_parameters"]
    kind = MultiViewClassifier if "unit" in saved else DensityClassifier
    accepted = {*inspect.signature(DensityClassifier).parameters, *inspect.signature(kind).parameters}
    # training-only settings of older checkpoints (optimizer, scheduler names) are not the model's
    hparams = {k: v for k, v in saved.items() if k in accepted}
    hparams.update(
        pretrained=False, weights=None, weights_prefix=None, keep_val_features=False
    )  # the weights come from the file
    model = kind(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    return Checkpoint(path=path, model=model.eval(), meta=ckpt["mammo"])
