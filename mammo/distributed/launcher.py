"""Lightning's DDP with the other ranks started from this Hydra job's own overrides.

Lightning's own launcher re-runs ``sys.argv`` (the whole ``-m`` sweep) with ``hydra.run.dir``
unresolved; here ranks 1..N-1 re-run only this job's overrides in rank zero's directory. Lightning
has no public hook for this, so this module is the one place that reaches into its internals
(``_SubprocessScriptLauncher``, ``DDPStrategy._configure_launcher``); ``tests/distributed/
test_launcher.py`` fails loudly when a Lightning release changes them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

_SPAWNED: list = []  # (processes, environment before the launch) of launches this process made


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of a rank that Lightning starts for this Hydra job."""
    import __main__

    hydra_cfg = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    command = [sys.executable, "-m", spec.name] if spec else [sys.executable, to_absolute_path(sys.argv[0])]
    command += list(hydra_cfg.overrides.task)
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher, starting ranks 1..N-1 on this job's overrides (see module doc)."""

    def _call_children_scripts(self) -> None:
        if not HydraConfig.initialized():
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        before = dict(os.environ)
        os.environ["MASTER_ADDR"] = self.cluster_environment.main_address
        os.environ["MASTER_PORT"] = str(self.cluster_environment.main_port)
        os.environ["NODE_RANK"] = str(self.cluster_environment.node_rank())
        os.environ["LOCAL_RANK"] = str(self.cluster_environment.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        self.procs = []
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            command, cwd = child_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=env, cwd=cwd))
        _SPAWNED.append((self.procs, before))


class HydraDDPStrategy(DDPStrategy):
    """Lightning's ``DDPStrategy`` whose launcher is :class:`HydraJobLauncher`."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._start_method == "popen":
            self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def ddp_strategy(**kwargs) -> HydraDDPStrategy:
    """The strategy of ``trainer=ddp`` / ``ddp_cpu`` (``strategy._target_``)."""
    return HydraDDPStrategy(**kwargs)


def finish_job(timeout_s: float = 120.0) -> None:
    """End of a Hydra job on rank zero: wait for the ranks it started, leave the process group and
    restore the environment, so that the next job of a sweep starts its own ranks again."""
    if not _SPAWNED:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    while _SPAWNED:
        procs, before = _SPAWNED.pop()
        for proc in procs:
            try:
                proc.wait(timeout=timeout_s)
            except Exception:  # a rank that hangs after the job is not worth hanging for
                proc.kill()
        os.environ.clear()
        os.environ.update(before)
