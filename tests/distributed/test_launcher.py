"""The Lightning adapter (mammo.distributed.launcher): what it uses of Lightning's internals."""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from mammo import CONFIG_DIR
from mammo.distributed.launcher import HydraDDPStrategy, HydraJobLauncher, child_command


def test_lightning_still_has_what_the_launcher_overrides():
    """Fails loudly when a Lightning release renames what mammo.distributed.launcher reaches into."""
    for name in ("_call_children_scripts", "_check_can_spawn_children", "launch"):
        assert callable(getattr(_SubprocessScriptLauncher, name)), name
    assert callable(HydraDDPStrategy._configure_launcher)
    launcher = HydraJobLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    assert launcher.procs == [] and launcher.cluster_environment.main_address


def test_a_popen_ddp_strategy_gets_the_hydra_job_launcher():
    import torch

    strategy = HydraDDPStrategy(
        parallel_devices=[torch.device("cpu")] * 2,
        cluster_environment=LightningEnvironment(),
        start_method="popen",
    )
    strategy._configure_launcher()
    assert type(strategy._launcher) is HydraJobLauncher


def test_other_ranks_rerun_this_jobs_overrides_in_its_directory(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("train", ["model=tiny", "seed=3"], return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path / "results_7")
    cfg.hydra.job.name = "train"
    monkeypatch.setattr(sys, "argv", ["mammo", "-m", "seed=1,2,3"])  # the sweep: not what ranks re-run
    HydraConfig.instance().set_config(cfg)
    command, _ = child_command(1)
    assert command[-5:] == [
        "model=tiny",
        "seed=3",
        f'hydra.run.dir="{tmp_path / "results_7"}"',
        "hydra.output_subdir=null",
        "hydra.job.name=train_rank1",
    ]
    assert "seed=1,2,3" not in command
