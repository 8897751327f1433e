"""Every config group option composes, and the composed configs instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from mammo.artifacts.rundir import register_resolvers

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = [
    "model",
    "data",
    "trainer",
    "cv",
    "hpo",
    "launcher",
    "callbacks",
    "logger",
    "paths",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_group_option_composes(group, option):
    needs = {("model", "classifier"): ["model.backbone=resnet18"]}  # the generic one names its backbone
    cfg = compose_train(f"{group}={option}", *needs.get((group, option), []))
    assert cfg.seed == 42
    assert cfg.model.arch and cfg.monitor == "val_kappa"


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


def test_spec_hyperparameters_are_top_level_keys():
    """The spec's summary.json example (artifact-logging.md) names these; each is set at the top,
    as a key or a config option (optimizer=adam), and recorded under its own name."""
    from mammo.core.train_settings import hyperparameters

    cfg = compose_train("data=dicom_csv", "data.csv=x.csv", "data.dicom_root=y")
    spec_example = ["epochs", "batch_size", "img_size", "learning_rate", "optimizer", "scheduler"]
    spec_example += ["warmup_epochs", "class_weights", "train_augment"]
    recorded = hyperparameters(cfg)
    for key in spec_example:
        assert key in cfg and key in recorded, key
    assert (recorded["optimizer"], recorded["scheduler"]) == ("adamw", "cosine")
    # real data keeps the spec's reference values; the demo preset shrinks them
    assert (cfg.img_size, cfg.epochs, cfg.learning_rate) == (512, 20, 1e-4)
    assert cfg.data.img_size == 512 and cfg.data.batch_size == 16
    demo = compose_train()
    assert demo.img_size == 128 and demo.data.demo.n_patients > 0


@pytest.mark.parametrize("model", ["efficientnetb0", "resnet50", "tiny"])
def test_models_instantiate(model):
    cfg = compose_train(f"model={model}")
    module = instantiate(cfg.model, num_classes=4)
    assert module.hparams.backbone == cfg.model.backbone
    assert module.head[-1].out_features == 4


@pytest.mark.parametrize(
    ("overrides", "bars"),
    [
        ([], ["EpochProgressBar"]),  # conf/callbacks/default.yaml's
        (["callbacks=none"], ["EpochProgressBar"]),  # mammo's, not Lightning's zero-based default
        (["callbacks=none", "+trainer.enable_progress_bar=false"], []),
    ],
)
def test_every_run_gets_the_one_based_progress_bar(overrides, bars):
    from lightning.pytorch.callbacks import ProgressBar

    from mammo.workflows.components import progress_bar

    cfg = compose_train(*overrides)
    configured = [instantiate(c) for c in cfg.callbacks.values() if c]
    added = progress_bar(cfg, configured)
    assert [type(c).__name__ for c in configured + added if isinstance(c, ProgressBar)] == bars


def test_trainer_and_callbacks_instantiate(tmp_path):
    cfg = compose_train("trainer=cpu", f"trainer.default_root_dir={tmp_path}")
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    names = {type(c).__name__ for c in callbacks}
    assert {"EarlyStopping", "EpochProgressBar"} <= names
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    assert trainer.max_epochs == cfg.epochs


@pytest.mark.parametrize(
    "overrides", [["cv=kfold"], ["hpo=density_optuna"], ["hpo=density_optuna", "cv=kfold"]]
)
def test_composing_allocates_no_run_directory(tmp_path, overrides):
    """Hydra merges configs by dereferencing what they override: the allocating resolvers sit only
    in conf/train.yaml, and cv/hpo change plain paths.* keys, so composing creates nothing."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={tmp_path}/out"])
        sweep_dir = cfg.paths.sweep_dir
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "out").exists()
    assert sweep_dir.endswith("hpo_runs" if "hpo=density_optuna" in overrides else "_seed42")


@pytest.mark.parametrize(
    "pruner", ["median", "percentile", "threshold", "successive_halving", "hyperband", "nop"]
)
def test_pruner_presets_instantiate(pruner):
    import optuna

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        bounds = ["hydra.sweeper.pruner.upper=1.0"] if pruner == "threshold" else []  # it needs one
        overrides = ["hpo=density_optuna", f"hydra/sweeper/pruner={pruner}", *bounds]
        cfg = compose("train", overrides, return_hydra_config=True)
    assert isinstance(instantiate(cfg.hydra.sweeper.pruner), optuna.pruners.BasePruner)


def test_density_optuna_prunes_with_the_median_by_default():
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("train", ["hpo=density_optuna"], return_hydra_config=True)
    pruner = cfg.hydra.sweeper.pruner
    assert pruner._target_ == "optuna.pruners.MedianPruner" and pruner.n_warmup_steps == 2


@pytest.mark.parametrize(
    ("overrides", "pretrained"),
    [
        (["data=dicom_csv", "data.csv=x.csv", "data.dicom_root=y"], True),
        (["data=rsna", "data.root=/data/rsna"], True),
        (["data=vindr", "data.root=/data/vindr", "model=resnet50"], True),
        (["data=dicom_csv", "data.csv=x.csv", "model=multiview"], True),
        (["experiment=density_512", "data=dicom_csv", "data.csv=x.csv"], True),
        ([], False),  # the demo trains from scratch in CPU minutes
        (["model=resnet50"], False),
        (["data=dicom_csv", "data.csv=x.csv", "model=tiny"], False),  # a test-sized model
        (["data=dicom_csv", "data.csv=x.csv", "pretrained=false"], False),
    ],
)
def test_real_data_starts_from_imagenet_weights_and_the_demo_and_tiny_from_random(overrides, pretrained):
    assert compose_train(*overrides).model.pretrained is pretrained
