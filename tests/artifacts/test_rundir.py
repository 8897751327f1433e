"""results_N allocation under concurrency."""

from __future__ import annotations

import multiprocessing as mp

from mammo.artifacts.rundir import allocate_run_dir


def _allocate(parent: str) -> str:
    return allocate_run_dir(parent).name


def test_numbers_follow_the_highest_existing(tmp_path):
    (tmp_path / "results_7").mkdir()
    (tmp_path / "results_x").mkdir()
    assert allocate_run_dir(tmp_path).name == "results_8"
    assert allocate_run_dir(tmp_path / "new").name == "results_1"


def test_eight_concurrent_processes_get_distinct_dirs(tmp_path):
    with mp.get_context("spawn").Pool(8) as pool:
        names = pool.map(_allocate, [str(tmp_path)] * 8)
    assert sorted(names) == [f"results_{i}" for i in range(1, 9)]
