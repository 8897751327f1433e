"""Where the ranks of a job that the cluster started meet: rank zero's run directory, named in a
claim file that the other ranks wait for (the run directory's parent is on a shared file system)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mammo.distributed.ranks import is_rank_zero

CLAIMS_DIR = ".rank_claims"
CLAIM_WAIT_S = 600.0
DATA_WAIT_S = 24 * 3600.0  # a first run over a large cohort fills its cache for hours


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


def data_marker(run_dir: Path, env: Mapping[str, str] = os.environ) -> Path | None:
    """Where rank zero of a cluster-started job says its data is prepared (``None`` otherwise)."""
    key = external_job_key(env)
    return None if key is None else Path(run_dir).parent / CLAIMS_DIR / f"{key}.data"


def mark_data_prepared(run_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    """Rank zero, after preparing the data (or failing to): let the other ranks start theirs."""
    marker = data_marker(run_dir, env)
    if marker is not None and is_rank_zero(env):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def wait_for_prepared_data(
    run_dir: Path, env: Mapping[str, str] = os.environ, timeout_s: float = DATA_WAIT_S
) -> None:
    """Another rank of a cluster-started job: wait until rank zero has prepared the data (header
    facts, hashes and the disk cache), so that this rank only reuses them. Ranks that Lightning
    starts need no wait: they start after rank zero's data is ready."""
    marker = data_marker(run_dir, env)
    if marker is None or is_rank_zero(env):
        return
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank zero prepared no data (no {marker}) within {timeout_s:.0f} s")
        time.sleep(0.2)


def release_claims(run_dir: Path, env: Mapping[str, str] = os.environ) -> None:
    """Rank zero, once every rank has joined the job: drop this job's claim and data marker."""
    key = external_job_key(env)
    if key is not None and is_rank_zero(env):
        claims = Path(run_dir).parent / CLAIMS_DIR
        (claims / key).unlink(missing_ok=True)
        (claims / f"{key}.data").unlink(missing_ok=True)
        try:
            claims.rmdir()
        except OSError:  # other jobs' claims are still there
            pass
