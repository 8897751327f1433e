"""A config runs only the code mammo chose: the exact targets ``conf/`` names (``mammo.core.targets``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import execution_whitelist, instantiate
from omegaconf import OmegaConf

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.core.errors import ConfigError
from mammo.core.targets import check_targets, conf_targets
from tests.conftest import SMALL_DEMO, TINY, run_cli

# one target from each package the list used to allow whole, none of which conf/ names; each can
# write a file, load code or start a process when called with the right arguments
FOREIGN = [
    "mammo.artifacts.io.write_json",
    "hydra_plugins.mammo_optuna.mammo_optuna_sweeper.MammoOptunaSweeper",
    "torch.hub.load",
    "lightning.pytorch.cli.LightningCLI",
    "optuna.load_study",
    "logging.FileHandler",
]


def test_the_trusted_targets_are_the_exact_ones_conf_names():
    from hydra._internal.utils import _locate

    assert not [t for t in TRUSTED_TARGETS if t.endswith("*")]
    assert set(conf_targets(CONFIG_DIR)) == set(TRUSTED_TARGETS)
    shipped = ("torch.optim.AdamW", "mammo.models.classifier.DensityClassifier", "logging.StreamHandler")
    assert set(shipped) <= set(TRUSTED_TARGETS)
    for target in TRUSTED_TARGETS:
        _locate(target)  # each names real code (a typo in conf/ would fail here)


@pytest.mark.parametrize("target", FOREIGN)
def test_a_target_of_an_allowed_package_that_conf_does_not_name_is_refused(target):
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=[f"+callbacks.extra._target_={target}"])
    with pytest.raises(ConfigError) as info:
        check_targets(cfg, TRUSTED_TARGETS)
    assert str(info.value).startswith(f"callbacks.extra._target_={target}: not a target mammo runs")
    assert "\n" not in str(info.value)
    with execution_whitelist(TRUSTED_TARGETS, reset=True), pytest.raises(InstantiationException):
        instantiate(OmegaConf.create({"_target_": target}))  # Hydra's own check refuses it too


def test_an_experiment_file_naming_other_code_is_refused_in_one_line(tmp_path, demo_root, capsys):
    """A colleague's experiment YAML whose callback writes a file: nothing runs, one line names
    the key and the file, and the run is recorded as failed."""
    from mammo.train import main

    marker = tmp_path / "written-by-the-config"
    experiment = tmp_path / "shared" / "experiment" / "colleague.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\n"
        "callbacks:\n"
        "  notes:\n"
        "    _target_: mammo.artifacts.io.write_json\n"
        f"    path: {marker}\n"
        "    data: {pwned: true}\n"
    )
    args = [
        "--config-dir",
        str(tmp_path / "shared"),
        "experiment=colleague",
        *TINY,
        *SMALL_DEMO,
        "callbacks=default",
        f"paths.output_dir={tmp_path / 'out'}",
        f"paths.demo_dir={demo_root}",
    ]
    assert run_cli(main, args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    refused = "callbacks.notes._target_=mammo.artifacts.io.write_json: not a target mammo runs"
    assert err[-1].startswith(refused)
    assert f"set in {experiment}" in err[-1] and "MAMMO_TRUSTED_TARGETS" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not marker.exists()
    (summary,) = (tmp_path / "out").glob("*/results_*/summary.json")
    assert json.loads(summary.read_text())["status"] == "failed"


def test_a_researchers_own_package_comes_in_through_the_environment(monkeypatch):
    from mammo.core.targets import trusted_targets

    monkeypatch.setenv("MAMMO_TRUSTED_TARGETS", "mylab.*, tests.callbacks.InjectNaN")
    trusted = trusted_targets(CONFIG_DIR)
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=["+callbacks.mine._target_=mylab.nets.Callback"])
    check_targets(cfg, trusted)
    assert trusted[-2:] == ["mylab.*", "tests.callbacks.InjectNaN"] and Path(CONFIG_DIR).is_dir()


def test_hydras_own_refusal_inside_a_job_is_printed_as_the_same_one_line(capsys):
    from mammo.core.errors import _report

    with execution_whitelist(TRUSTED_TARGETS, reset=True), pytest.raises(InstantiationException) as info:
        instantiate(OmegaConf.create({"pruner": {"_target_": "optuna.load_study"}}).pruner)
    _report(InstantiationException, info.value, None)
    err = capsys.readouterr().err
    assert (
        err.startswith("pruner._target_=optuna.load_study: not a target mammo runs") and err.count("\n") == 1
    )


HYDRA_NODE_EXPERIMENTS = {
    "callbacks": "hydra:\n  callbacks:\n    evil:\n      _target_: os.system\n"
    "      command: touch {marker}\n",
    "job_logging": "hydra:\n  job_logging:\n    handlers:\n      evil:\n        (): os.system\n"
    "        command: touch {marker}\n",
}


@pytest.mark.parametrize(
    ("node", "multirun"), [("callbacks", False), ("job_logging", False), ("callbacks", True)]
)
def test_an_untrusted_target_in_hydras_own_nodes_is_one_line_and_nothing_runs(tmp_path, node, multirun):
    """Hydra refused them too, but with a 29-62-line traceback naming neither the file nor
    MAMMO_TRUSTED_TARGETS."""
    from tests.test_cli import cli

    marker = tmp_path / "ran"
    experiment = tmp_path / "mine" / "experiment" / "evil.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text("# @package _global_\n" + HYDRA_NODE_EXPERIMENTS[node].format(marker=marker))
    args = ["--config-dir", str(tmp_path / "mine"), "experiment=evil", f"paths.output_dir={tmp_path / 'out'}"]
    proc = cli(*(["-m", "seed=1,2"] if multirun else []), *args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    key = "hydra.callbacks.evil._target_" if node == "callbacks" else "hydra.job_logging.handlers.evil.()"
    assert err.strip().splitlines() == [
        f"{key}=os.system: not a target mammo runs (the classes and functions conf/ names; set in "
        f"{experiment}); to run your own code, add it to MAMMO_TRUSTED_TARGETS "
        "(e.g. MAMMO_TRUSTED_TARGETS=mylab.*)"
    ]
    assert not marker.exists() and not (tmp_path / "out").exists()
