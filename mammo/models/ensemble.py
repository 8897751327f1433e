"""Several checkpoints, and test-time augmentations, as one predictor (``ckpt=`` a list or a folder,
``tta=[...]``) for ``mammo.evaluate``, ``mammo.predict`` and ``mammo.export``.

Members: a ``best_model.pt``, a run directory (its ``best_model.pt``), a cross-validation folder
(``fold_<k>/results/best_model.pt``: its k fold models) or a sweep folder (``sweeps/sweep_N/``:
the completed runs its ``jobs.jsonl`` lists, e.g. a seed sweep's). The ensemble's probabilities are
the mean, over members and over the original image plus each augmentation, of each member's
probabilities (with its own temperature, when it was calibrated).

Test-time augmentations must be ones a mammogram can show and that keep what preprocessing made
of it: the chest wall on the side ``data.orient`` put it, the breast inside the frame. So small
rotations and zooms about the centre, within the training augmentation's range (10 degrees,
0.9-1.1), are offered; a horizontal flip, which moves the chest wall to the other side, is refused.

>>> sorted(AUGMENTATIONS)
['identity', 'rotate+5', 'rotate-5', 'zoom0.95', 'zoom1.05']
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammo.artifacts.rundir import fold_dirs, sweep_jobs
from mammo.core.errors import ConfigError
from mammo.models.checkpoint import Checkpoint, load_checkpoint


def affine(x: torch.Tensor, degrees: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """``[B, C, H, W]`` images rotated by ``degrees`` and zoomed by ``scale`` about their centre
    (what falls outside stays black, the background of a mammogram)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


AUGMENTATIONS = {
    "identity": lambda x: x,
    "rotate-5": lambda x: affine(x, degrees=-5.0),
    "rotate+5": lambda x: affine(x, degrees=5.0),
    "zoom0.95": lambda x: affine(x, scale=0.95),
    "zoom1.05": lambda x: affine(x, scale=1.05),
}
REFUSED = {
    "hflip": "a horizontal flip moves the chest wall to the other side of an oriented mammogram",
}


def check_tta(names) -> list[str]:
    """The augmentations named (``tta=[rotate-5, zoom1.05]``), or one line naming a bad one."""
    names = [str(n) for n in (names or [])]
    for name in names:
        if name in REFUSED:
            raise ConfigError(f"tta={name}: {REFUSED[name]}; use {', '.join(AUGMENTATIONS)}")
        if name not in AUGMENTATIONS:
            raise ConfigError(f"tta={name!r}: expected one of {', '.join(AUGMENTATIONS)}")
    return names


def checkpoint_files(spec) -> list[Path]:
    """The ``best_model.pt`` files ``ckpt=`` names: a file, a run, a CV or a sweep folder, or a list."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)  # a list (also a ListConfig)
    files = [file for item in items for file in files_in(Path(str(item)))]
    if not files:
        raise ConfigError("ckpt: no checkpoint given")
    return list(dict.fromkeys(files))


def named_by(path: Path) -> str:
    """What one ``ckpt=`` item names: ``file`` (a ``best_model.pt``), ``run`` (a run directory),
    ``cv`` (a cross-validation folder) or ``sweep`` (a sweep folder); one line for anything else."""
    if path.is_file():
        return "file"
    if (path / "best_model.pt").is_file():
        return "run"
    if any((run / "best_model.pt").is_file() for run in fold_dirs(path).values()):
        return "cv"
    if (path / "jobs.jsonl").is_file():
        return "sweep"
    raise ConfigError(
        f"ckpt={path}: not a best_model.pt, a run directory, a cross-validation folder (fold_*/results/) "
        "or a sweep folder (sweeps/sweep_N/)"
    )


def files_in(path: Path) -> list[Path]:
    kind = named_by(path)
    if kind == "file":
        return [path]
    if kind == "run":
        return [path / "best_model.pt"]
    if kind == "cv":
        runs = list(fold_dirs(path).values())
    else:  # a sweep: its completed runs
        runs = [Path(j["run_dir"]) for j in sweep_jobs(path) if j.get("status") == "completed"]
    return [run / "best_model.pt" for run in runs if (run / "best_model.pt").is_file()]


class EnsembleModel(nn.Module):
    """The members' mean probability over the original image and each augmentation, returned as
    its logarithm: one score per class whose softmax is the ensemble's probabilities, as a single
    model's (so evaluation, prediction and export read it alike)."""

    def __init__(self, models: list[nn.Module], temperatures: list[float], tta: list[str]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.temperatures = list(temperatures)
        self.tta = list(tta)
        self.hparams = getattr(models[0], "hparams", None)  # a traced member has none

    def forward(self, x: torch.Tensor, *embedding: torch.Tensor) -> torch.Tensor:
        views = [x, *(AUGMENTATIONS[name](x) for name in self.tta)]
        total = torch.zeros(())
        for member, temperature in zip(self.members, self.temperatures):
            for view in views:
                total = total + (member(view, *embedding).float() / temperature).softmax(dim=1)
        return (total / (len(self.members) * len(views))).clamp_min(1e-30).log()


class Ensemble(Checkpoint):
    """Several checkpoints (and augmentations) read as one: the class labels, preprocessing and
    ``model`` of a :class:`~mammo.models.checkpoint.Checkpoint`, whose model averages theirs."""

    def __init__(self, members: list[Checkpoint], tta: list[str]) -> None:
        first = members[0]
        for member in members[1:]:
            for what in ("class_labels", "preprocessing"):
                if getattr(member, what) != getattr(first, what):
                    raise ConfigError(
                        f"ckpt: {member.path} was trained with other {what.replace('_', ' ')} than "
                        f"{first.path}; an ensemble's members must share them"
                    )
            if member.model.hparams.embeddings_fusion != first.model.hparams.embeddings_fusion:
                raise ConfigError(f"ckpt: {member.path} and {first.path} differ in embeddings fusion")
            if member.unit != first.unit:
                raise ConfigError(
                    f"ckpt: {member.path} predicts {member.unit or 'image'}s, {first.path} "
                    f"{first.unit or 'image'}s; an ensemble's members must predict the same unit"
                )
        model = EnsembleModel([m.model for m in members], [m.temperature for m in members], tta)
        super().__init__(path=first.path, model=model.eval(), meta={**first.meta, "temperature": 1.0})
        self.parts, self.tta = members, tta
        self.views = [trained_views(m) for m in members]
        self.member_models = [EnsembleModel([m.model], [m.temperature], tta).eval() for m in members]
        if self.routes_views and self.unit:
            raise ConfigError(
                "ckpt: the members were trained on different views, but they are multi-view models, "
                "which see every view of a unit; a per-view ensemble is one of image-level models"
            )

    @property
    def members(self) -> list[Checkpoint]:
        return self.parts

    @property
    def routes_views(self) -> bool:
        """Whether the members were trained on different views (a per-view ensemble: a CC model
        and an MLO model), so that each image goes to the members of its view only."""
        return len({tuple(v) if v else None for v in self.views}) > 1

    def routes(self, views) -> list[tuple[nn.Module, np.ndarray]]:
        """Each member (with the augmentations) and which of the images, of ``views``, it takes;
        an image of a view no member took is one line."""
        view = np.array([str(v).strip().upper() if isinstance(v, str) else "" for v in views], dtype=object)
        routes = [
            (model, np.ones(len(view), bool) if taken is None else np.isin(view, taken))
            for model, taken in zip(self.member_models, self.views)
        ]
        check_every_view_taken(sum(rows.astype(int) for _, rows in routes), list(view), self.views)
        return routes

    def probabilities(self, images: torch.Tensor, views=None, assignment=None) -> torch.Tensor:
        """``[B, K]`` probabilities of a batch; a per-view ensemble needs each image's view."""
        if not self.routes_views:
            return super().probabilities(images, views, assignment)
        total = torch.zeros(len(images), len(self.class_labels), device=images.device)
        count = torch.zeros(len(images), 1, device=images.device)
        for model, rows in self.routes(views):
            if rows.any():
                taken = torch.from_numpy(rows).to(images.device)
                total[taken] += model(images[taken]).float().softmax(dim=1)
                count[taken] += 1
        return total / count

    @property
    def explained(self):
        """The model Grad-CAM explains: the first member's."""
        return self.members[0].model

    def record(self) -> dict:
        """summary.json's ``ensemble``: the members (with the views each takes) and the augmentations."""
        ensemble = {
            "members": [
                {
                    "checkpoint": str(m.path),
                    "run_id": m.meta.get("run_id"),
                    "temperature": m.temperature,
                    "views": views if self.routes_views else None,
                }
                for m, views in zip(self.members, self.views)
            ],
            "tta": ["original", *self.tta],
        }
        return {"ensemble": ensemble}


def trained_views(checkpoint: Checkpoint) -> list[str] | None:
    """The views a checkpoint was trained on (``data.views``), upper case; ``None``: all."""
    views = checkpoint.meta.get("config", {}).get("data", {}).get("views")
    return None if views is None else [str(v).strip().upper() for v in views]


def check_every_view_taken(count, view: list[str], member_views: list) -> None:
    """A per-view ensemble has a member for each image's view, or says which view has none."""
    missing = sorted({v for c, v in zip(count, view) if c == 0})
    if missing:
        raise ConfigError(
            f"ckpt: no member of the per-view ensemble takes {', '.join(missing) or 'unknown-view'} images "
            f"(the members' data.views: {member_views})"
        )


def load_predictor(spec, tta=None) -> Checkpoint:
    """One checkpoint as it is, or several (and/or augmentations) as an :class:`Ensemble`."""
    files, tta = checkpoint_files(spec), check_tta(tta)
    if len(files) == 1 and not tta:
        return load_checkpoint(files[0])
    return Ensemble([load_checkpoint(f) for f in files], tta)
