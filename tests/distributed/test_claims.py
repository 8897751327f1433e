"""Where the ranks of a cluster-started job meet: rank zero's run directory and its data marker."""

from __future__ import annotations

import threading
import time

import pytest

from mammo.artifacts.rundir import allocate_run_dir
from mammo.distributed.claims import (
    CLAIMS_DIR,
    mark_data_prepared,
    release_claims,
    shared_run_dir,
    wait_for_prepared_data,
)
from tests.distributed import SLURM_JOB


def test_cluster_started_ranks_share_the_directory_rank_zero_allocates(tmp_path):
    seen = {}

    def rank(r: int) -> None:
        seen[r] = shared_run_dir(tmp_path, allocate_run_dir, env={**SLURM_JOB, "SLURM_PROCID": str(r)})

    followers = [threading.Thread(target=rank, args=(r,)) for r in (1, 2)]
    for t in followers:  # the other ranks start first and wait for rank zero's claim
        t.start()
    rank(0)
    for t in followers:
        t.join(timeout=10)
    assert seen[0] == seen[1] == seen[2] == tmp_path / "results_1"
    assert [p.name for p in tmp_path.glob("results_*")] == ["results_1"]
    release_claims(seen[0], env={**SLURM_JOB, "SLURM_PROCID": "0"})
    assert not (tmp_path / CLAIMS_DIR).exists()


def test_a_rank_without_rank_zero_gives_up_with_the_claim_path(tmp_path):
    with pytest.raises(TimeoutError, match=r"slurm-4242-0"):
        shared_run_dir(tmp_path, allocate_run_dir, env={**SLURM_JOB, "SLURM_PROCID": "1"}, timeout_s=0.3)
    assert not list(tmp_path.glob("results_*"))


def test_other_ranks_set_up_their_data_after_rank_zero_prepared_it(tmp_path):
    run_dir = tmp_path / "results_1"
    rank = {r: {**SLURM_JOB, "SLURM_PROCID": str(r)} for r in (0, 1)}
    done = threading.Event()

    def rank_one():
        wait_for_prepared_data(run_dir, rank[1], timeout_s=30)
        done.set()

    waiter = threading.Thread(target=rank_one)
    waiter.start()
    time.sleep(0.5)
    assert not done.is_set()  # rank 1 waits for rank zero's data
    mark_data_prepared(run_dir, rank[0])
    waiter.join(10)
    assert done.is_set()
    wait_for_prepared_data(run_dir, {}, timeout_s=0)  # one process: nothing to wait for
    release_claims(run_dir, rank[0])
    assert not (tmp_path / CLAIMS_DIR).exists()
    with pytest.raises(TimeoutError, match=r"slurm-4242-0\.data"):
        wait_for_prepared_data(run_dir, rank[1], timeout_s=0.3)
    wait_for_prepared_data(run_dir, rank[0], timeout_s=0)  # rank zero never waits
