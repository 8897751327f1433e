"""Type and range checks of a training run's settings, before any work is done.

Each bad value stops the run with one line naming the key, the value and what it must be, e.g.
``learning_rate=-1: expected a number > 0``. Hydra parses command-line values (``img_size=abc``
is the string ``'abc'``); these checks are what turns a value that would fail deep inside torch,
or silently train to garbage, into that line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mammo import CONFIG_DIR
from mammo.core.errors import ConfigError
from mammo.data.images import image_shape, normal_img_size
from mammo.data.settings import ON_BAD_FILE
from mammo.evaluation.metrics import SHORT_NAMES

HYPERPARAMETERS = (
    "epochs",
    "batch_size",
    "img_size",
    "learning_rate",
    "optimizer",
    "scheduler",
    "warmup_epochs",
    "weight_decay",
    "class_weights",
    "train_augment",
    "backbone_lr_factor",
    "dropout_rate",
    "loss",
    "label_smoothing",
    "early_stopping_patience",
    "monitor",
    "deterministic",
)
"""The top-level settings that summary.json records as ``hyperparameters`` (with ``arch``)."""

MONITORABLE = ("val_loss", *(f"val_{short}" for short in SHORT_NAMES.values()))
"""The metrics a run can select its best epoch by (each is in every validation epoch)."""


@dataclass(frozen=True)
class Rule:
    """``key`` must be a ``kind`` (``int``, ``number``, ``bool``, ``choice`` or ``any``) for which
    ``valid(value, cfg)`` holds; ``expected`` says so in words. ``None`` passes if ``optional``."""

    key: str
    kind: str
    expected: str
    valid: Callable[[Any, DictConfig], bool] = lambda value, cfg: True
    optional: bool = False


def _choice(key: str, options, optional: bool = False) -> Rule:
    return Rule(key, "choice", f"one of {', '.join(map(str, options))}", lambda v, c: v in options, optional)


def _names(key: str, expected: str) -> Rule:
    """``key`` is a list of non-empty names (or null)."""
    return Rule(
        key,
        "any",
        expected,
        lambda v, c: isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v),
        True,
    )


TRAIN_RULES: tuple[Rule, ...] = (
    Rule("seed", "int", "an integer"),
    Rule("epochs", "int", "an integer >= 1", lambda v, c: v >= 1),
    Rule("batch_size", "int", "an integer >= 1", lambda v, c: v >= 1),
    Rule(
        "img_size",
        "any",
        "an integer >= 32, or [height, width] of integers >= 32 (pixels)",
        lambda v, c: _is_img_size(v) and min(image_shape(v)) >= 32,
    ),
    Rule("learning_rate", "number", "a number > 0", lambda v, c: v > 0),
    Rule("weight_decay", "number", "a number >= 0", lambda v, c: v >= 0),
    Rule("dropout_rate", "number", "a number in [0, 1)", lambda v, c: 0 <= v < 1),
    Rule("label_smoothing", "number", "a number in [0, 1)", lambda v, c: 0 <= v < 1),
    Rule(
        "warmup_epochs",
        "int",
        "an integer >= 0, and below epochs with scheduler=cosine (lower it, e.g. warmup_epochs=0, "
        "or use scheduler=constant)",
        lambda v, c: 0 <= v and (not warms_up(c) or not isinstance(c.epochs, int) or v < c.epochs),
    ),
    Rule("backbone_lr_factor", "number", "a number >= 0", lambda v, c: v >= 0),
    Rule("early_stopping_patience", "int", "an integer >= 0", lambda v, c: v >= 0),
    _choice("monitor", MONITORABLE),
    _choice("monitor_mode", ("max", "min")),
    Rule("train_augment", "bool", "true or false"),
    Rule("compile", "bool", "true or false"),
    Rule("freeze_backbone", "bool", "true or false"),
    Rule("unfreeze_last_block", "bool", "true or false"),
    Rule("deterministic", "any", "true, false or warn", lambda v, c: v in (True, False, "warn")),
    Rule("gradcam_per_class", "int", "an integer >= 0", lambda v, c: v >= 0),
    Rule("review", "bool", "true or false", optional=True),
    _names("data.subgroup_columns", "a list of label-file column names"),
    Rule(
        "class_weights",
        "any",
        "auto, none or a list of numbers >= 0",
        lambda v, c: (
            (isinstance(v, str) and v.lower() in ("auto", "none"))
            or (isinstance(v, list) and all(_is_number(w) and w >= 0 for w in v))
        ),
        optional=True,
    ),
    _choice("calibrate", ("none", "temperature"), optional=True),
    Rule("eval.bootstrap", "int", "an integer >= 0 (0: no intervals)", lambda v, c: v >= 0, optional=True),
    _choice("eval.aggregate", ("mean", "max"), optional=True),
    Rule("data.num_workers", "int", "an integer >= 0", lambda v, c: v >= 0),
    Rule("data.val_fraction", "number", "a fraction in (0, 1)", lambda v, c: 0 < v < 1),
    Rule("data.test_fraction", "number", "a fraction in (0, 1)", lambda v, c: 0 < v < 1, optional=True),
    Rule("data.subset", "number", "a fraction in (0, 1] or a number of images > 1", lambda v, c: v > 0, True),
    _choice("data.on_bad_file", ON_BAD_FILE),
    _names("data.views", "a list of views such as [CC, MLO], or null for all"),
    Rule("cv.folds", "int", "an integer >= 2", lambda v, c: v >= 2, optional=True),
    Rule(
        "cv.fold",
        "int",
        "a fold number from 1 to cv.folds",
        lambda v, c: isinstance(c.cv.folds, int) and 1 <= v <= c.cv.folds,
        optional=True,
    ),
)


INDEPENDENT: dict[str, str] = {
    "data.split_seed": "seed",
    "hydra.sweeper.sampler.seed": "seed",
    "model.pretrained": "pretrained",
}
"""Settings of their own whose default interpolates another (the split can be fixed while the
training seed varies; a study's sampler can be reseeded without changing the runs; a model whose
weights are its own, model=tiny's random ones, keeps them whatever the data preset says)."""


def derived_settings(config_dir: str | Path) -> dict[str, str]:
    """Each key of ``conf/`` whose value is only ``${setting}``, a restatement of a setting set
    elsewhere (a top-level setting of ``train.yaml``, a config group it chooses, a ``cv``,
    ``data`` or ``loss`` setting), mapped to that setting; :data:`INDEPENDENT` keys are settings of their
    own. Read from the YAML files, so a new interpolation cannot be forgotten; paths and Hydra's
    own keys are not settings."""
    root = Path(config_dir)
    train = OmegaConf.to_container(OmegaConf.load(root / "train.yaml"), resolve=False)
    groups = {str(k) for entry in train.get("defaults", []) if isinstance(entry, dict) for k in entry}
    derived = {}
    for path in sorted(root.rglob("*.yaml")):
        package = _package(path, root)
        for key, value in _leaves(OmegaConf.to_container(OmegaConf.load(path), resolve=False)):
            match = re.fullmatch(r"\$\{([\w.]+)\}", str(value))
            source = match[1] if match else ""
            if source in train or source in groups or source.split(".")[0] in ("cv", "data", "loss"):
                derived.setdefault(f"{package}{key}", source)
    return {key: source for key, source in derived.items() if key not in INDEPENDENT}


def _package(path: Path, root: Path) -> str:
    """Where a config file's keys land: ``# @package _global_`` files at the top, group files
    under their group (``conf/trainer/gpu.yaml`` -> ``trainer.``), primary configs at the top."""
    relative = path.relative_to(root)
    if "@package _global_" in path.read_text() or len(relative.parts) == 1:
        return ""
    return "" if relative.parts[0] == "hydra" else f"{relative.parts[0]}."


def _leaves(tree, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key != "defaults":
                yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


DERIVED: dict[str, str] = derived_settings(CONFIG_DIR)
"""Keys that only restate a setting set elsewhere (their config interpolates it): a user sets the
source, and a derived key overridden to another value is refused, naming the source."""


def warms_up(cfg: DictConfig) -> bool:
    """Whether the scheduler has a warm-up (``scheduler=cosine``)."""
    return "warmup_epochs" in (cfg.get("scheduler") or {})


def hyperparameters(cfg: DictConfig) -> dict:
    """summary.json's ``hyperparameters``: ``arch`` and each of :data:`HYPERPARAMETERS`, the
    optimizer and scheduler by the name of their config option (:func:`option_name`), the loss
    by its name."""
    return {"arch": cfg.model.arch, **{key: setting_value(cfg, key) for key in HYPERPARAMETERS}}


def setting_value(cfg: DictConfig, key: str):
    """A setting as records write it: plain Python, a config option (``optimizer``) by its name."""
    node = OmegaConf.select(cfg, key)
    if OmegaConf.is_dict(node) and "_target_" in node:
        return option_name(key, node)
    return node.name if OmegaConf.is_dict(node) and "name" in node else plain(node)  # loss=corn: corn


def option_name(group: str, node: DictConfig) -> str:
    """The option of config group ``group`` (``conf/<group>/<name>.yaml``) whose ``_target_`` is
    ``node``'s, e.g. ``adamw``; a target no option has is named by its class (``lamb``)."""
    for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")):
        if OmegaConf.load(path).get("_target_") == node._target_:
            return path.stem
    return node._target_.rsplit(".", 1)[-1].lower()


def check_train_settings(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first setting of ``TRAIN_RULES`` that is off, or the
    first derived key (``DERIVED``) overridden to disagree with its source."""
    check(cfg, TRAIN_RULES)
    check_derived(cfg, DERIVED)


def check_derived(cfg: DictConfig, derived: dict[str, str]) -> None:
    """A derived key still interpolating its source, or overridden to the same value, passes;
    another value stops with ``trainer.max_epochs=2: set epochs=2 instead``."""
    for key, source in derived.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None)
        if not OmegaConf.is_config(node) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
            continue
        value, wanted = node[leaf], OmegaConf.select(cfg, source, default=None)
        if value != wanted:
            raise ConfigError(f"{key}={_show(value)}: set {source}={_show(value)} instead")


def plain(value):
    """A config value as plain Python (lists and dicts for config nodes), e.g. for JSON records."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        value = plain(OmegaConf.select(cfg, rule.key, default=None))
        if value is None and rule.optional:
            continue
        if not (_has_kind(value, rule.kind) and rule.valid(value, cfg)):
            raise ConfigError(f"{rule.key}={_show(value)}: expected {rule.expected}")


def _has_kind(value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    return True


def _is_img_size(value) -> bool:
    """An integer or ``[height, width]``, as :func:`~mammo.data.images.normal_img_size` reads it."""
    try:
        normal_img_size(value)
    except ConfigError:
        return False
    return True


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _show(value) -> str:
    """A value as the user would type it back: ``abc`` as ``'abc'``, ``None`` as ``null``.

    >>> _show("abc"), _show(None), _show(-1), _show([1, 2])
    ("'abc'", 'null', '-1', '[1, 2]')
    """
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)
