"""Every numeric, typed or named setting is checked before any work (mammo.core.train_settings)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from mammo import CONFIG_DIR
from mammo.core.errors import ConfigError
from mammo.core.train_settings import DERIVED, INDEPENDENT, check_train_settings, derived_settings
from tests.conftest import SMALL_DEMO, TINY, run_cli


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rate=-1", "learning_rate=-1: expected a number > 0"),
        ("learning_rate=abc", "learning_rate='abc': expected a number > 0"),
        ("batch_size=0", "batch_size=0: expected an integer >= 1"),
        ("epochs=0", "epochs=0: expected an integer >= 1"),
        ("img_size=abc", "img_size='abc': expected an integer >= 32, or [height, width] of integers >= 32"),
        ("img_size=16", "img_size=16: expected an integer >= 32"),
        ("img_size=[1024,16]", "img_size=[1024, 16]: expected an integer >= 32, or [height, width]"),
        ("img_size=[1024,512,3]", "img_size=[1024, 512, 3]: expected an integer >= 32, or [height, width]"),
        ("dropout_rate=1.0", "dropout_rate=1.0: expected a number in [0, 1)"),
        ("weight_decay=-0.1", "weight_decay=-0.1: expected a number >= 0"),
        ("warmup_epochs=20", "warmup_epochs=20: expected an integer >= 0, and below epochs"),
        ("backbone_lr_factor=-1", "backbone_lr_factor=-1: expected a number >= 0"),
        ("data.num_workers=-1", "data.num_workers=-1: expected an integer >= 0"),
        ("data.val_fraction=1.5", "data.val_fraction=1.5: expected a fraction in (0, 1)"),
        ("monitor=val_nosuch", "monitor='val_nosuch': expected one of val_loss, val_acc,"),
        ("monitor_mode=maximum", "monitor_mode='maximum': expected one of max, min"),
        ("train_augment=maybe", "train_augment='maybe': expected true or false"),
        ("class_weights=[1,-2,1,1]", "class_weights=[1, -2, 1, 1]: expected auto, none or a list"),
        ("data.views=CC", "data.views='CC': expected a list of views"),
        ("cv=kfold cv.folds=1", "cv.folds=1: expected an integer >= 2"),
    ],
)
def test_a_bad_setting_names_its_key(override, message):
    cfg = composed(*override.split())
    with pytest.raises(ConfigError) as info:
        check_train_settings(cfg)
    assert str(info.value).startswith(message)


def test_an_unknown_optimizer_or_scheduler_names_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"Could not find 'optimizer/adagrad'") as info:
        composed("optimizer=adagrad")
    assert all(name in str(info.value) for name in ("adam", "adamw", "sgd"))
    with pytest.raises(MissingConfigException, match=r"scheduler/step[\s\S]*constant[\s\S]*cosine"):
        composed("scheduler=step")


def test_optimizer_and_scheduler_are_torch_classes_built_from_config():
    import torch
    from hydra.utils import instantiate

    cfg = composed("optimizer=sgd", "weight_decay=0.01", "scheduler=cosine", "warmup_epochs=1", "epochs=4")
    params = [torch.zeros(2, requires_grad=True)]
    optimizer = instantiate(cfg.model.optimizer)([{"params": params, "lr": 0.1}])
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["weight_decay"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    schedule = instantiate(cfg.model.scheduler)(optimizer)
    assert type(schedule) is torch.optim.lr_scheduler.SequentialLR
    lrs = []
    for _ in range(4):
        lrs.append(round(optimizer.param_groups[0]["lr"], 4))
        optimizer.step()
        schedule.step()
    assert lrs == [0.05, 0.1, 0.075, 0.025]  # warm-up, then cosine over the 3 epochs left
    constant = instantiate(composed("scheduler=constant").model.scheduler)(optimizer)
    assert type(constant) is torch.optim.lr_scheduler.ConstantLR


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=density_512"],
        ["scheduler=constant", "warmup_epochs=30", "epochs=3"],
        ["data.views=null"],
    ],
)
def test_the_shipped_settings_pass(overrides):
    check_train_settings(composed(*overrides))


def test_a_bad_setting_stops_before_any_work(tmp_path, demo_root, capsys):
    from mammo.train import main

    args = [
        *TINY,
        *SMALL_DEMO,
        "learning_rate=-1",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 1
    err = capsys.readouterr().err
    assert "learning_rate=-1: expected a number > 0" in err and "Traceback" not in err
    (run,) = (tmp_path / "mammo_tiny_density").glob("results_*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]["type"] == "ConfigError"
    assert summary["hyperparameters"]["learning_rate"] == -1
    log = (run / "run.log").read_text()
    assert "learning_rate=-1" in log and "Loading data" not in log  # nothing read, nothing trained


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=5", "trainer.max_epochs=2"], "trainer.max_epochs=2: set epochs=2 instead"),
        (["img_size=64", "data.img_size=48"], "data.img_size=48: set img_size=48 instead"),
        (["data.batch_size=4"], "data.batch_size=4: set batch_size=4 instead"),
        (["data.train_augment=false"], "data.train_augment=False: set train_augment=False instead"),
        (
            ["callbacks.early_stopping.patience=1"],
            "callbacks.early_stopping.patience=1: set early_stopping_patience=1",
        ),
        (["trainer.deterministic=false"], "trainer.deterministic=False: set deterministic=False instead"),
        (["model.dropout_rate=0.5"], "model.dropout_rate=0.5: set dropout_rate=0.5 instead"),
        (["scheduler.max_epochs=3"], "scheduler.max_epochs=3: set epochs=3 instead"),
        (["optimizer.weight_decay=0.5"], "optimizer.weight_decay=0.5: set weight_decay=0.5 instead"),
        (["scheduler.warmup_epochs=0"], "scheduler.warmup_epochs=0: set warmup_epochs=0 instead"),
        # its old place: the data module reads the embeddings now
        (["model.embeddings_dir=emb"], "model.embeddings_dir='emb': set data.embeddings_dir='emb' instead"),
    ],
)
def test_a_derived_key_set_to_another_value_names_the_key_to_use(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_train_settings(composed(*overrides))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "overrides",
    [
        ["epochs=5", "trainer.max_epochs=5"],  # the same value says nothing new
        ["trainer=gpu"],  # deterministic=true becomes Lightning's "warn" on the GPU, by interpolation
        ["trainer=ddp_cpu"],
        ["data.split_seed=7"],  # a setting of its own that defaults to seed
    ],
)
def test_derived_keys_that_agree_pass(overrides):
    check_train_settings(composed(*overrides))


def test_the_derived_keys_are_read_from_conf(tmp_path):
    """Every ``key: ${setting}`` in conf/ restating a setting is derived (a second place to set it
    is refused) unless listed as a setting of its own; paths and Hydra's keys are not settings."""
    assert DERIVED["trainer.max_epochs"] == "epochs" and DERIVED["scheduler.max_epochs"] == "epochs"
    assert DERIVED["model.optimizer"] == "optimizer"  # a config group restated
    assert DERIVED["data.cv_folds"] == "cv.folds" and DERIVED["model.embeddings_dir"] == "data.embeddings_dir"
    assert DERIVED["callbacks.early_stopping.monitor"] == "monitor"
    assert not set(INDEPENDENT) & set(DERIVED)
    assert not [k for k, source in DERIVED.items() if source.startswith(("paths.", "hydra"))]
    (tmp_path / "train.yaml").write_text("defaults:\n  - trainer: default\n  - _self_\nepochs: 3\nseed: 1\n")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "default.yaml").write_text(
        "max_epochs: ${epochs}\nnew_knob: ${epochs}\ndefault_root_dir: ${paths.run_dir}\nname: ${trainer}\n"
    )
    (tmp_path / "trainer" / "global.yaml").write_text("# @package _global_\ndata:\n  seed: ${seed}\n")
    assert derived_settings(tmp_path) == {
        "trainer.max_epochs": "epochs",
        "trainer.new_knob": "epochs",  # a new interpolation cannot be forgotten
        "trainer.name": "trainer",
        "data.seed": "seed",
    }


def test_epochs_alone_fits_the_presets_warmup_and_both_given_name_the_fix(tmp_path, demo_root, capsys):
    from mammo.train import main

    # the demo's data preset sets warmup_epochs=1; a newcomer types only epochs=1
    base = [t for t in TINY if not t.startswith("warmup_epochs")] + SMALL_DEMO
    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, [*base, *paths, "epochs=1"]) == 0
    (run,) = (tmp_path / "mammo_tiny_density").glob("results_*")
    log = (run / "run.log").read_text()
    assert "warmup_epochs=1 shortened to 0 to fit epochs=1 (scheduler=cosine)" in log
    assert json.loads((run / "summary.json").read_text())["hyperparameters"]["warmup_epochs"] == 0
    capsys.readouterr()
    assert run_cli(main, [*base, *paths, "epochs=1", "warmup_epochs=1"]) == 1
    err = capsys.readouterr().err
    assert "warmup_epochs=1: expected an integer >= 0, and below epochs with scheduler=cosine" in err
    assert "warmup_epochs=0" in err and "scheduler=constant" in err
