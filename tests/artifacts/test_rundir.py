"""results_N allocation under concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys

import pytest

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


def test_loader_workers_default_to_the_cpus_this_process_may_use():
    """data.num_workers: ${mammo.cpus:} -- the affinity mask (what SLURM or taskset grants), not
    the machine's core count."""
    if shutil.which("taskset") is None:
        pytest.skip("needs taskset (util-linux) to restrict the process to one CPU")
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "from mammo import CONFIG_DIR\n"
        "from mammo.artifacts.rundir import register_resolvers\n"
        "register_resolvers()\n"
        "with initialize_config_dir(config_dir=CONFIG_DIR):\n"
        "    print(compose('train').data.num_workers, compose('predict').num_workers)\n"
    )
    one_cpu = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert one_cpu.stdout.split() == ["1", "1"], one_cpu.stderr
    every = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert every.stdout.split() == [str(len(os.sched_getaffinity(0)))] * 2, every.stderr
