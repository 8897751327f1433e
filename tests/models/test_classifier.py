"""DensityClassifier: inputs, the optimizer and schedule built from config nodes, checkpoints."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mammo import CONFIG_DIR
from mammo.core.errors import ConfigError
from mammo.models.classifier import DensityClassifier


def model_config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR):
        return compose("train", ["model=tiny", *overrides]).model


def build(*overrides: str, **kwargs) -> DensityClassifier:
    return instantiate(model_config(*overrides), _convert_="all", **kwargs)


def test_greyscale_batches_of_any_float_dtype_give_one_logit_per_class():
    model = build(num_classes=4).eval()
    for dtype in (torch.float16, torch.float32):
        assert model(torch.rand(3, 1, 32, 32, dtype=dtype)).shape == (3, 4)


def test_the_head_and_backbone_learn_at_their_own_rates_under_the_configured_schedule():
    model = build(
        "optimizer=sgd", "learning_rate=0.1", "backbone_lr_factor=0.5", "epochs=4", "warmup_epochs=1"
    )
    config = model.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["momentum"] == 0.9
    head, body = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}
    assert (head["initial_lr"], body["initial_lr"]) == (0.1, 0.05)
    assert config["lr_scheduler"]["interval"] == "epoch"
    factors = []
    for _ in range(4):
        factors.append(round(optimizer.param_groups[0]["lr"] / 0.1, 4))
        optimizer.step()
        schedule.step()
    assert factors == [0.5, 1.0, 0.75, 0.25]


def test_a_frozen_backbone_leaves_one_parameter_group():
    model = build("freeze_backbone=true", "unfreeze_last_block=false")
    assert len(model.configure_optimizers()["optimizer"].param_groups) == 1


def test_the_factories_stay_out_of_the_checkpoint_hyperparameters():
    model = build()
    assert isinstance(model.optimizer_factory, functools.partial)
    assert "optimizer" not in model.hparams and "scheduler" not in model.hparams
    assert model.hparams.learning_rate == pytest.approx(model_config().learning_rate)


def test_a_model_built_for_inference_has_no_optimizer():
    model = DensityClassifier(arch="tiny", backbone="test_efficientnet")
    with pytest.raises(ConfigError, match="without an optimizer"):
        model.configure_optimizers()


def test_an_older_checkpoint_with_optimizer_names_still_loads(tmp_path):
    from mammo.models.checkpoint import load_checkpoint

    model = build()
    hparams = {
        **model.hparams,
        "optimizer": "adamw",
        "scheduler": "cosine",
        "weight_decay": 1e-4,
        "max_epochs": 3,
    }
    meta = {"preprocessing": {"img_size": 32}, "class_labels": [1, 2, 3, 4]}
    torch.save(
        {"hyper_parameters": hparams, "state_dict": model.state_dict(), "mammo": meta}, tmp_path / "b.pt"
    )
    loaded = load_checkpoint(tmp_path / "b.pt")
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(loaded.model(x), model.eval()(x))
