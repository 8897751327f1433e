"""Shared by evaluate and predict: the data config of a checkpoint, batched inference."""

from __future__ import annotations

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mammo.core.errors import ConfigError
from mammo.data.dataset import collate
from mammo.data.preprocess import normal_img_size
from mammo.models.device import autocast, for_inference, pin_memory, to_device

PREPROCESSING_KEYS = ("window", "percentiles", "orient", "crop", "resize", "j2k_reduce", "box_reduce")


def checkpoint_datamodule(cfg: DictConfig, checkpoint, split_csv: str | None = None):
    """The data config, with preprocessing, image size and classes taken from the checkpoint.

    A value set explicitly on the command line that differs from the checkpoint's is an error.
    """
    explicit = dict(o.lstrip("+").split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    settings = checkpoint.preprocessing
    for key in PREPROCESSING_KEYS:
        if f"data.{key}" not in explicit:
            continue
        given, expected = cfg.data[key], settings[key]
        if key == "percentiles":
            given, expected = [float(v) for v in given], [float(v) for v in expected]
        if given != expected:
            raise ConfigError(
                f"data.{key}={given!r} contradicts the checkpoint ({expected!r}); drop the override"
            )
    if cfg.img_size is not None and normal_img_size(cfg.img_size) != normal_img_size(settings["img_size"]):
        raise ConfigError(f"img_size={cfg.img_size} contradicts the checkpoint ({settings['img_size']})")
    classes = checkpoint.class_labels
    return instantiate(
        cfg.data,
        _convert_="all",
        img_size=settings["img_size"],
        **{k: settings[k] for k in PREPROCESSING_KEYS},
        num_classes=len(classes),
        include_class_5=5 in classes,
        split_csv=split_csv,
        cv_folds=None,
        cv_fold=None,
        subset=None,
    )


@torch.inference_mode()
def predict_probs(
    model,
    dataset,
    batch_size: int,
    num_workers: int = 0,
    device: torch.device | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Class probabilities (float64), ``softmax(logits / temperature)``, for every item of a
    DicomDataset, in order, computed on ``device`` (the CPU by default; see ``mammo.models.device``)."""
    device = device or torch.device("cpu")
    model = for_inference(model, device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory(device),
    )
    out = []
    for images, _, _, *embedding in loader:
        with autocast(device):
            logits = model(to_device(images, device), *(to_device(e, device) for e in embedding))
        out.append((logits.float() / temperature).softmax(1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.hparams.num_classes))
