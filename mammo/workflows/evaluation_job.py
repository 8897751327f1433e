"""``python -m mammo.evaluate``'s job: a checkpoint's predictions, metrics and plots on labelled
data, read from its config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mammo.artifacts.io import write_json
from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import ConfigError
from mammo.data.images import normal_img_size
from mammo.data.labels import read_csv_table
from mammo.data.scan import manifest_changes
from mammo.evaluation.checkpoint_eval import write_evaluation
from mammo.evaluation.gradcam import EXPLANATIONS, explanation_figures
from mammo.evaluation.inference import predict_probs, routed_probs
from mammo.evaluation.subgroups import label_subgroups
from mammo.models.checkpoint import Checkpoint
from mammo.models.device import resolve_device
from mammo.models.ensemble import load_predictor
from mammo.review_pages.build import check_review_setting
from mammo.workflows.components import eval_settings
from mammo.workflows.training_job import given_overrides, override_key

SPLITS = ("all", "val", "train", "test")


log = logging.getLogger("mammo")


def evaluate(cfg: DictConfig, out: Path, summary) -> dict:
    """Predict ``cfg.split`` of the data with ``cfg.ckpt``; write predictions, metrics, plots."""
    route_library_logs()
    check_review_setting(cfg.get("review"))
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: expected one of {', '.join(SPLITS)}")
    checkpoint = load_predictor(cfg.ckpt, cfg.get("tta"))
    datamodule, table = evaluation_data(cfg, checkpoint, out)
    datamodule.feed_units(checkpoint.unit)  # a multi-view model: whole breasts or exams
    write_json(out / "data_manifest.json", datamodule.manifest)
    classes = checkpoint.class_labels
    log.info("Evaluating %d images (%s) with %s", len(table), cfg.split, checkpoint.meta.get("arch"))
    dataset = datamodule.dataset(table)
    device = resolve_device(cfg.device)
    log.info("Inference on %s", device)
    if checkpoint.temperature != 1.0:
        log.info("Temperature scaling from the checkpoint: T = %.4f", checkpoint.temperature)
    workers, temperature = int(cfg.data.num_workers), checkpoint.temperature
    if checkpoint.routes_views:  # a per-view ensemble: each image to its view's members
        probs = routed_probs(checkpoint, datamodule, table, int(cfg.batch_size), workers, device)
    else:
        probs = predict_probs(checkpoint.model, dataset, int(cfg.batch_size), workers, device, temperature)
    evaluation, subgroups = eval_settings(cfg), label_subgroups(datamodule)
    metrics, _, levels = write_evaluation(
        out, table, probs, classes, cfg.split, evaluation, subgroups=subgroups, unit=checkpoint.unit
    )
    if cfg.gradcam_per_class:
        figures = explanation_figures(
            checkpoint.explained, dataset, table, classes, int(cfg.gradcam_per_class), out / "plots"
        )
        for path, count in figures.items():
            log.info("%s of %d images: %s", EXPLANATIONS[path.name][0], count, path)
    return {
        "checkpoint": str(checkpoint.path),
        "training_run": {"run_id": checkpoint.meta.get("run_id"), "run_dir": str(checkpoint.run_dir)},
        "data_config": {**datamodule.describe_samples(), "split": cfg.split, "num_evaluated": len(table)},
        "model_config": {
            "arch": checkpoint.meta.get("arch"),
            "backbone": checkpoint.meta.get("backbone"),
            "class_labels": classes,
            "unit": checkpoint.unit,
        },
        "metrics": metrics,
        "levels": levels,
        **checkpoint.record(),
    }


def evaluation_data(cfg: DictConfig, checkpoint: Checkpoint, out: Path):
    """The datamodule (preprocessed as the checkpoint's training data) and the rows to evaluate:
    all of them, or the ``val`` / ``train`` / ``test`` rows of the training run's ``split.csv``
    (a per-view ensemble's: its members' files joined, ``out/members_split.csv``)."""
    split_csv = None
    if cfg.split != "all":
        split_csv = checkpoint.run_dir / "split.csv"
        if not split_csv.is_file():
            raise ConfigError(f"split={cfg.split}: {split_csv} not found (the checkpoint's run directory)")
        if checkpoint.routes_views:
            split_csv = joined_member_splits(checkpoint, cfg.split, out / "members_split.csv")
        else:
            check_members_share_the_split(checkpoint, cfg.split)
    datamodule = checkpoint_datamodule(cfg, checkpoint, str(split_csv) if split_csv else None)
    if split_csv:
        datamodule.setup("validate")
        table = {"val": datamodule.val_table, "train": datamodule.train_table, "test": datamodule.test_table}[
            cfg.split
        ]
        if table.empty:
            raise ConfigError(f"split={cfg.split}: the training run's {split_csv} has no {cfg.split} rows")
    else:
        datamodule.prepare_samples()
        table = datamodule.samples.table
    if checkpoint.model.hparams.embeddings_fusion:
        datamodule.attach_embeddings(checkpoint.model.hparams.embeddings_dir)
    say_how_the_data_differ(checkpoint, datamodule.manifest)
    return datamodule, table


LOCAL_DATA_KEYS = ("data.num_workers", "data.cache_mode", "data.cache_dir")
"""Data arguments that change how images are read, not which: the run's own data still stands."""


def evaluated_data(cfg: DictConfig, checkpoint: Checkpoint) -> DictConfig:
    """The data node to evaluate on: the training run's own data settings (the checkpoint's
    config) unless the command line gives data arguments (``data=...``, ``data.csv=...``). The
    target is conf/'s, never the checkpoint's: a shared checkpoint names no code to run."""
    given = [override_key(o) for o in given_overrides()]
    other = [k for k in given if (k == "data" or k.startswith("data.")) and k not in LOCAL_DATA_KEYS]
    own = checkpoint.members[0].meta.get("config", {}).get("data")
    if other or not own:
        return cfg.data
    data = OmegaConf.create(own)
    data._target_ = cfg.data._target_
    if checkpoint.routes_views:  # a per-view ensemble: every member's views, not the first's
        data.views = every_view(checkpoint.views)
    for key in (k.split(".", 1)[1] for k in LOCAL_DATA_KEYS if k in given):
        data[key] = cfg.data[key]
    log.info(
        "Data: the training run's own (%s); data arguments (data=..., data.csv=...) evaluate other data",
        own.get("csv")
        or (own.get("demo") and "demo data in " + str(own["demo"].get("dir")))
        or own.get("root"),
    )
    return data


def say_how_the_data_differ(checkpoint: Checkpoint, manifest: dict) -> None:
    """One WARNING line when the evaluated images differ from the training run's
    (``data_manifest.json``): how many were added, removed, relabelled or changed."""
    saved = checkpoint.members[0].run_dir / "data_manifest.json"
    if not saved.is_file():
        return
    changes = manifest_changes(json.loads(saved.read_text()), manifest)
    if changes:
        log.warning("The evaluated data differ from the training run's (%s): %s", saved, changes)


def check_members_share_the_split(checkpoint: Checkpoint, split: str) -> None:
    """An ensemble is evaluated on one side of a split only where every member's ``split.csv`` puts
    the same images there (a seed sweep's test or validation rows; a CV's folds share only the test)."""
    members = checkpoint.members
    first = split_rows(members[0].run_dir, split)
    for member in members[1:]:
        if split_rows(member.run_dir, split) != first:
            raise ConfigError(
                f"split={split}: {member.run_dir} and {members[0].run_dir} hold different {split} images "
                + SPLIT_ADVICE["test" if split == "test" else "other"]
            )


SPLIT_ADVICE = {
    "test": "(trained with different data.split_seed?); train the members on one split "
    "(-m seed=42,43,44 data.split_seed=42), or evaluate the ensemble on split=all or other data",
    "other": "(cross-validation folds, or different data.split_seed?); evaluate the ensemble on "
    "split=test or split=all",
}
"""What to do when an ensemble's members disagree on a split's images: on the test split, a
seed sweep that let the split follow the seed; on validation, CV folds."""


def every_view(member_views: list) -> list[str] | None:
    """The views of a per-view ensemble's members together (``None``: a member takes all)."""
    if any(views is None for views in member_views):
        return None
    return list(dict.fromkeys(view for views in member_views for view in views))


def joined_member_splits(checkpoint: Checkpoint, split: str, joined: Path) -> Path:
    """A per-view ensemble's split: each member's ``split.csv`` holds its own views' images, so
    the members must put each patient they share on the same side; their rows together, written
    to ``joined``, say where every image of every member's views lies."""
    tables = [member_split(member.run_dir, split).astype({"PatientID": str}) for member in checkpoint.members]
    sides = [dict(table.groupby("PatientID")["split"].first()) for table in tables]
    for member, side in zip(checkpoint.members[1:], sides[1:]):
        if any(side[patient] != sides[0][patient] for patient in side.keys() & sides[0].keys()):
            raise ConfigError(
                f"split={split}: {member.run_dir} and {checkpoint.members[0].run_dir} put different "
                "patients on each side " + SPLIT_ADVICE["test" if split == "test" else "other"]
            )
    pd.concat(tables).drop_duplicates("image_id").to_csv(joined, index=False)
    return joined


def member_split(run_dir: Path, split: str) -> pd.DataFrame:
    """An ensemble member's ``split.csv`` (``split``: the side asked for, named if it is missing)."""
    split_csv = run_dir / "split.csv"
    if not split_csv.is_file():
        raise ConfigError(f"split={split}: {split_csv} not found (a member's run directory)")
    return read_csv_table(split_csv, "ckpt", "split CSV")


def split_rows(run_dir: Path, split: str) -> set[str]:
    table = member_split(run_dir, split)
    return set(table.loc[table["split"] == split, "image_id"])


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
        evaluated_data(cfg, checkpoint),
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
