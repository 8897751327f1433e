"""Distributed data parallel training under Hydra: which process writes, where the ranks meet.

Every rank of a DDP job runs the same Hydra task. Only global rank zero writes the run directory
(``is_rank_zero``); all ranks must agree on that directory:

* Lightning starts the other ranks itself (``trainer=ddp`` / ``ddp_cpu`` on one machine):
  :class:`DDPStrategy` re-runs the job's own overrides (not the whole ``-m`` sweep, as Lightning's
  launcher would) with ``hydra.run.dir`` set to rank zero's directory.
* The cluster starts every rank (SLURM ``srun``, ``torchrun``): each rank resolves
  ``hydra.run.dir`` itself, so :func:`shared_run_dir` lets rank zero allocate ``results_N`` and
  hands its name to the other ranks through a claim file keyed by the job's identity.

Validation outputs are gathered from all ranks and de-duplicated by dataset row
(:func:`gather_unique`), so metrics and ``val_predictions.csv`` cover the validation split once.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# the variables through which launchers tell a process its place; absent means zero
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
CLAIMS_DIR = ".rank_claims"
CLAIM_WAIT_S = 600.0


def is_rank_zero(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is global rank zero (the only one that writes run artifacts).

    >>> is_rank_zero({})
    True
    >>> is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "1"})
    False
    >>> is_rank_zero({"SLURM_PROCID": "3"})
    False
    """
    return all(int(env.get(name) or 0) == 0 for name in RANK_VARIABLES)


def external_job_key(env: Mapping[str, str] = os.environ) -> str | None:
    """An identity shared by all ranks of one job whose processes the cluster started, or ``None``
    for a single process (and for ranks that Lightning started, which are given the directory).

    >>> external_job_key({"SLURM_NTASKS": "2", "SLURM_JOB_ID": "812", "SLURM_STEP_ID": "0"})
    'slurm-812-0'
    >>> external_job_key({"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"})
    'torchrun-abc-n1-29500'
    >>> external_job_key({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "812"}) is None
    True
    """
    if int(env.get("SLURM_NTASKS") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '')}"
    if env.get("TORCHELASTIC_RUN_ID"):
        return (
            f"torchrun-{env['TORCHELASTIC_RUN_ID']}-{env.get('MASTER_ADDR', '')}-{env.get('MASTER_PORT', '')}"
        )
    return None


def shared_run_dir(
    parent: Path,
    allocate: Callable[[Path], Path],
    env: Mapping[str, str] = os.environ,
    timeout_s: float = CLAIM_WAIT_S,
) -> Path:
    """The run directory of this job: rank zero allocates it; in a job whose ranks the cluster
    started, rank zero writes its name to ``parent/.rank_claims/<job key>`` and the other ranks
    wait for that file (the run directory's parent is on a file system all nodes share)."""
    key = external_job_key(env)
    if key is None:
        return allocate(parent)
    claim = Path(parent) / CLAIMS_DIR / key
    if is_rank_zero(env):
        run_dir = allocate(parent)
        claim.parent.mkdir(parents=True, exist_ok=True)
        tmp = claim.with_name(f".{key}.{os.getpid()}.tmp")
        tmp.write_text(run_dir.name)
        os.replace(tmp, claim)  # the other ranks see the whole name or nothing
        return run_dir
    deadline = time.monotonic() + timeout_s
    while not claim.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"rank zero of job {key} named no run directory in {claim} within {timeout_s:.0f} s"
            )
        time.sleep(0.2)
    return Path(parent) / claim.read_text().strip()


def release_claims(run_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    """Rank zero, once every rank has joined the job: drop this job's claim file."""
    key = external_job_key(env)
    if key is not None and is_rank_zero(env):
        claims = Path(run_dir).parent / CLAIMS_DIR
        (claims / key).unlink(missing_ok=True)
        try:
            claims.rmdir()
        except OSError:  # other jobs' claims are still there
            pass


def _world_size() -> int:
    """Processes in the torch.distributed group this process is in (1 outside one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_unique(rows, *tensors):
    """All ranks' ``rows`` (dataset row labels) and per-row ``tensors``, each row once.

    ``DistributedSampler`` pads the last shard with repeated rows so that every rank gets the same
    number; those repeats are dropped here. Outside a process group this returns its inputs. Every
    rank gets the same result, sorted by row, so metrics computed from it agree across ranks.
    ``None`` entries in ``tensors`` stay ``None``.
    """
    import torch
    import torch.distributed as dist

    if _world_size() == 1:
        return (rows, *tensors)
    local = [rows.cpu(), *(None if t is None else t.cpu() for t in tensors)]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    all_rows = torch.cat([p[0] for p in parts])
    order = torch.argsort(all_rows, stable=True)
    sorted_rows = all_rows[order]
    first = torch.ones_like(sorted_rows, dtype=torch.bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    keep = order[first]
    out = [all_rows[keep]]
    for i, tensor in enumerate(tensors, start=1):
        out.append(None if tensor is None else torch.cat([p[i] for p in parts])[keep].to(tensor.device))
    return tuple(out)


def broadcast_from_rank_zero(value):
    """Rank zero's ``value`` on every rank of the process group (``value`` itself outside one)."""
    import torch.distributed as dist

    if _world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------------------
# Lightning's DDP, with the other ranks started from this Hydra job's own overrides
# ------------------------------------------------------------------------------------------------
_SPAWNED: list = []  # (processes, environment before the launch) of launches this process made


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of a rank that Lightning starts for this Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

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


def _launcher_class():
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    class HydraJobLauncher(_SubprocessScriptLauncher):
        """Lightning's launcher, starting ranks 1..N-1 on this job's overrides (see module doc)."""

        def _call_children_scripts(self) -> None:
            import subprocess

            from hydra.core.hydra_config import HydraConfig

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

    return HydraJobLauncher


def finish_job(timeout_s: float = 120.0) -> None:
    """End of a Hydra job on rank zero: wait for the ranks it started, leave the process group and
    restore the environment, so that the next job of a sweep starts its own ranks again."""
    if not _SPAWNED:
        return
    import torch.distributed as dist

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


def ddp_strategy(**kwargs):
    """Lightning's ``DDPStrategy`` whose launcher is :func:`_launcher_class` (``trainer=ddp``)."""
    from lightning.pytorch.strategies import DDPStrategy

    class HydraDDPStrategy(DDPStrategy):
        def _configure_launcher(self) -> None:
            super()._configure_launcher()
            if self._start_method == "popen":
                self._launcher = _launcher_class()(
                    self.cluster_environment, self.num_processes, self.num_nodes
                )

    return HydraDDPStrategy(**kwargs)
