"""Atomic allocation of ``results_N`` run directories.

Hydra asks for the run directory through the ``mammo.next_run`` resolver (see ``conf/train.yaml``):
``os.mkdir`` either creates a directory or fails, so concurrent launches that race for the same N
simply move on to the next one and never share a directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import OmegaConf

from mammo.core.targets import refused_hydra_targets
from mammo.distributed.claims import shared_run_dir
from mammo.distributed.ranks import is_rank_zero

RUN_PREFIX = "results_"
_RUN_RE = re.compile(rf"^{RUN_PREFIX}(\d+)$")


def existing_run_numbers(parent: str | os.PathLike, prefix: str = RUN_PREFIX) -> list[int]:
    """Numbers N of the ``<prefix>N`` directories already under ``parent``.

    >>> existing_run_numbers("/nonexistent/dir")
    []
    """
    if not os.path.isdir(parent):
        return []
    pattern = _RUN_RE if prefix == RUN_PREFIX else re.compile(rf"^{re.escape(prefix)}(\d+)$")
    return sorted(int(m.group(1)) for name in os.listdir(parent) if (m := pattern.match(name)))


def allocate_run_dir(parent: str | os.PathLike, prefix: str = RUN_PREFIX) -> Path:
    """Create and return ``parent/<prefix>N`` for the smallest N above every existing one."""
    parent = Path(parent)
    numbers = existing_run_numbers(parent, prefix)
    n = (numbers[-1] + 1) if numbers else 1
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            candidate = parent / f"{prefix}{n}"
            try:
                os.mkdir(candidate)
                return candidate
            except FileExistsError:
                n += 1
    except OSError as exc:  # read-only or full outputs/, a file in the way, ...
        stop(f"paths.output_dir: cannot create a run directory in {parent}: {exc.strerror or exc}")


def stop(message: str) -> NoReturn:
    """End the command with ``message`` as its one line and exit code 1, from where Hydra resolves
    the run directory: an exception raised there would reach the user wrapped in Hydra's and
    OmegaConf's tracebacks, and nothing of the run exists yet to record it in."""
    sys.stderr.write(message + "\n")
    raise SystemExit(1)


def resume_dir(resume: str, experiment_dir: str | os.PathLike) -> Path:
    """The run directory ``resume=`` names: a path, or a ``results_N`` of the experiment.

    Nothing is created: a name that is not a mammo run directory stops the command.
    """
    candidates = list(dict.fromkeys((Path(resume), Path(experiment_dir) / str(resume))))
    for candidate in candidates:
        if (candidate / "summary.json").is_file() and (candidate / ".hydra" / "config.yaml").is_file():
            return candidate
    stop(
        f"resume={resume}: not a mammo run directory (a results_N folder with summary.json and "
        f".hydra/config.yaml; looked in {' and '.join(map(str, candidates))})"
    )


def stop_if_completed(resume: str, run: Path) -> None:
    """``resume=`` of a run that completed: say so and end the command, writing nothing (its
    history, logs, timings and MLflow run stay as they are)."""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return  # an unreadable summary.json is the resume's own error to report
    if summary.get("status") == "completed":
        ended = summary.get("execution", {}).get("end_time") or "earlier"
        sys.stderr.write(
            f"resume={resume}: {run} already completed ({ended}); nothing to resume and nothing changed "
            "(start a new run to train again)\n"
        )
        raise SystemExit(0)


def _next_run_name(parent: str, fixed: str | None = None) -> str:
    """``hydra.sweep.subdir``: ``fixed`` if the config fixes it, else a new ``results_N``."""
    if fixed is not None:
        return str(fixed)
    return shared_run_dir(Path(parent), allocate_run_dir).name


def _run_or_resume(resume, parent: str, fixed: str | None = None) -> str:
    """``hydra.run.dir``: the run directory named by ``resume=``, else ``fixed`` if the config fixes
    it, else a new ``results_N`` (one per distributed job: ``mammo.distributed.claims.shared_run_dir``)."""
    if resume:
        run = resume_dir(resume, parent)
        stop_if_completed(resume, run)
        return str(run)
    if fixed is not None:
        return str(fixed)
    return str(shared_run_dir(Path(parent), allocate_run_dir))


def _hydra_subdir(resume) -> str | None:
    """``.hydra/`` of a new run; only rank zero writes one. A resumed run keeps its own, and its
    ``.hydra_resume/`` is written once the resume is accepted (``mammo.workflows.resume``)."""
    if not is_rank_zero() or resume:
        return None
    return ".hydra"


def _rank_zero_file(path: str) -> str:
    """A log file that only rank zero writes (the other ranks of a DDP job log to the console)."""
    return path if is_rank_zero() else os.devnull


def _fold_dir(fold) -> str:
    """A CV fold's run directory below the CV directory (``.`` when all folds run in one job)."""
    return "." if fold is None else f"fold_{int(fold)}/results"


def _deterministic_where_possible(deterministic):
    """``trainer.deterministic`` of the GPU presets: ``deterministic=true`` becomes Lightning's
    ``warn`` (deterministic kernels wherever CUDA has one, a warning where it has none, e.g.
    adaptive pooling's backward), so that the one top-level setting still decides."""
    return "warn" if deterministic is True else deterministic


def _mixed_precision() -> str:
    """The GPU presets' ``trainer.precision``: bf16 mixed precision where the GPU has bf16
    (Ampere and later: no loss scaling, fp32's range), else fp16 with loss scaling."""
    import torch  # here, not at the top: only composing a GPU preset needs it

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def _benchmark(deterministic) -> bool:
    """``trainer.benchmark`` of the GPU presets: cuDNN's autotuner unless results must repeat."""
    return deterministic is False


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what SLURM or taskset granted)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpus_per_node(accelerator: str, devices) -> int | None:
    """The GPUs a SLURM job asks for per node: ``trainer.devices``, none for a CPU trainer.

    >>> _gpus_per_node("cpu", 2), _gpus_per_node("gpu", 4), _gpus_per_node("auto", 1)
    (None, 4, 1)
    """
    return None if accelerator == "cpu" else int(devices)


def register_resolvers() -> None:
    """Register mammo's OmegaConf resolvers (idempotent).

    ``use_cache`` makes a config resolve its run directory once, however often it is read.
    """
    resolvers = {
        "mammo.next_run": (_next_run_name, True),
        "mammo.run_or_resume": (_run_or_resume, True),
        "mammo.hydra_subdir": (_hydra_subdir, False),
        "mammo.fold_dir": (_fold_dir, False),
        "mammo.rank_zero_file": (_rank_zero_file, False),
        "mammo.mixed_precision": (_mixed_precision, False),
        "mammo.benchmark": (_benchmark, False),
        "mammo.cpus": (available_cpus, False),
        "mammo.gpus_per_node": (_gpus_per_node, False),
        "mammo.deterministic_where_possible": (_deterministic_where_possible, False),
        "mammo.refused_hydra_targets": (refused_hydra_targets, False),
    }
    for name, (resolver, use_cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_resolver(name, resolver, use_cache=use_cache)


FOLD_RE = re.compile(r"^fold_(\d+)$")


def fold_dirs(cv_dir: Path) -> dict[int, Path]:
    """``{k: cv_dir/fold_k/results}`` for the folds present."""
    out = {}
    for child in Path(cv_dir).iterdir() if Path(cv_dir).is_dir() else []:
        match = FOLD_RE.match(child.name)
        if match and (child / "results").is_dir():
            out[int(match.group(1))] = child / "results"
    return dict(sorted(out.items()))


def sweep_jobs(sweep_dir: str | os.PathLike) -> list[dict]:
    """The records of a sweep's ``jobs.jsonl`` (one per job: ``run_dir``, ``status``, ...)."""
    jobs = Path(sweep_dir) / "jobs.jsonl"
    return [json.loads(line) for line in jobs.read_text().splitlines() if line.strip()]
