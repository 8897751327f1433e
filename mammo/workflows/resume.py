"""What ``resume=<run dir>`` keeps: the run's record of each start, the checkpoint it continues
from, the loggers' histories, and, when the resume is refused, every file as it was.

- **Starts.** ``summary.json``'s ``starts`` lists each start of the run: time, host, git commit,
  the versions of mammo, torch, Lightning and timm, the preprocessing pipeline's version and the
  epochs already trained. A resume under other code says so on one WARNING line; one under
  another preprocessing pipeline is refused, as changed data is.
- **The checkpoint.** ``checkpoints/last.ckpt`` is read (weights only) before anything is
  written; a damaged one is one line naming the file.
- **Histories.** Lightning's CSVLogger deletes the ``metrics.csv`` it finds; a resumed run's
  logger continues it instead (:class:`ContinuedCSVHistory`), from the epochs the checkpoint holds.
- **A refused resume** leaves run.log as it was (its lines of this attempt are cut off) and writes
  no ``.hydra_resume/``: this module writes that record once the resume is accepted.
"""

from __future__ import annotations

import csv
import logging
import os
import pickle
import socket
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

import mammo
from mammo.artifacts.provenance import environment_info, git_info
from mammo.artifacts.redact import mask_files
from mammo.artifacts.summary import now
from mammo.core.errors import ConfigError, ResumeRefused, first_line
from mammo.data.images import PIPELINE_VERSION
from mammo.models.backbones import load_failure

log = logging.getLogger("mammo")
CODE = ("git_commit", "git_dirty", "mammo_version", "torch_version", "lightning_version", "timm_version")
"""What a start records of the code that trains (besides where, when and from which epoch)."""


def this_start(from_epoch: int) -> dict:
    """The record of one start of a run: ``{time, host, <CODE>, pipeline_version, from_epoch}``."""
    environment, git = environment_info(), git_info()
    return {
        "time": now(),
        "host": socket.gethostname(),
        "git_commit": git["git_commit"],
        "git_dirty": git["git_dirty"],
        "mammo_version": mammo.__version__,
        **{key: environment[key] for key in ("torch_version", "lightning_version", "timm_version")},
        "pipeline_version": PIPELINE_VERSION,
        "from_epoch": from_epoch,
    }


def first_start(summary: dict) -> dict:
    """The first start of a run recorded before ``starts`` existed, from its summary's fields."""
    environment = summary.get("environment", {})
    return {
        "time": summary.get("execution", {}).get("start_time"),
        "host": environment.get("hostname"),
        "git_commit": summary.get("git_commit"),
        "git_dirty": summary.get("git_dirty"),
        "mammo_version": None,
        **{key: environment.get(key) for key in ("torch_version", "lightning_version", "timm_version")},
        "pipeline_version": None,
        "from_epoch": 0,
    }


def code_changes(before: dict, after: dict) -> str:
    """What differs between the code of two starts (``""``: nothing known to differ).

    >>> code_changes({"git_commit": "abc1234", "torch_version": "2.13"},
    ...              {"git_commit": "def5678", "torch_version": "2.14"})
    'git_commit abc1234 -> def5678, torch_version 2.13 -> 2.14'
    """
    return ", ".join(
        f"{key} {before[key]} -> {after[key]}"
        for key in CODE
        if before.get(key) is not None and after.get(key) is not None and before[key] != after[key]
    )


def record_start(run, from_epoch: int) -> None:
    """Append this start to ``summary.json``'s ``starts``. On resume: refuse another preprocessing
    pipeline (the cached inputs would differ from the epochs before), warn about other code."""
    summary, run_dir = run.summary, run.directory
    start = this_start(from_epoch)
    starts = list(summary.data.get("starts") or [])
    if run.cfg.get("resume"):
        before = starts[-1] if starts else first_start(summary.data)
        if before["pipeline_version"] not in (None, PIPELINE_VERSION):
            raise ResumeRefused(
                f"resume={run_dir}: the run started under preprocessing pipeline version "
                f"{before['pipeline_version']}, this mammo has {PIPELINE_VERSION}: its inputs would differ "
                "from the epochs before; continue it with the mammo it started with, or train a new run"
            )
        changed = code_changes(before, start)
        if changed:
            log.warning(
                "resume=%s: epochs 1-%d were trained by other code (%s); summary.json's starts record each",
                run_dir,
                from_epoch,
                changed,
            )
        starts = starts or [before]
    summary.update(starts=[*starts, start])


def resume_point(run_dir: Path) -> int:
    """The epochs ``checkpoints/last.ckpt`` holds (0 without one), read as weights only before the
    run writes anything: a damaged file is one line naming it, a pickle payload is refused."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return 0
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
        return int(state["epoch"]) + 1
    except pickle.UnpicklingError as exc:  # what torch raises for a checkpoint that is more than data
        raise ConfigError(
            f"resume={run_dir}: {last} is not loaded: it holds more than weights and training state "
            f"({load_failure(exc)}); mammo loads checkpoints as weights only, so that a shared file "
            "cannot run code"
        ) from None
    except Exception as exc:  # torch raises many types for a cut or corrupted file
        raise ResumeRefused(
            f"resume={run_dir}: {last} is damaged ({first_line(exc)}) and cannot be continued; mammo "
            "keeps no earlier checkpoint (each is written whole, then renamed over the last), so the run "
            "stays as it was: evaluate its best_model.pt, or train a new run"
        ) from None


def record_resume_command(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra_resume/``: the config a resumed run goes on with and the command's overrides, as
    Hydra records a run in ``.hydra/`` (written here, once the resume is accepted)."""
    folder = run_dir / ".hydra_resume"
    folder.mkdir(exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(hydra.overrides.task)), folder / "overrides.yaml")
    mask_files(folder)


class RunLogMark:
    """run.log's length when a resume starts, so that a refused one leaves the file as it was."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "run.log"
        self.size = self.path.stat().st_size if self.path.is_file() else None

    def restore(self) -> None:
        """Close run.log's handlers (nothing more of this attempt is written there) and cut off
        what this attempt wrote."""
        for logger in (logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)):
            for handler in list(getattr(logger, "handlers", [])):
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == self.path:
                    handler.close()
                    logger.removeHandler(handler)
        if self.size is not None and self.path.is_file():
            os.truncate(self.path, self.size)


class ContinuedCSVHistory(L.Callback):
    """A resumed run's ``logs/metrics.csv`` keeps the rows of the epochs its checkpoint holds.

    Lightning's CSVLogger deletes the file it finds when it starts writing; this callback keeps
    the rows (:meth:`kept`, before the trainer exists) and, once the checkpoint is restored,
    writes back those of the epochs before it and lets the logger append to them (its public
    ``metrics_file_path`` and ``metrics_keys``)."""

    def __init__(self, logger: CSVLogger, rows: list[dict], header: list[str]) -> None:
        self.logger, self.rows, self.header = logger, rows, header

    @classmethod
    def kept(cls, logger: CSVLogger) -> ContinuedCSVHistory | None:
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            return None
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            return cls(logger, list(reader), list(reader.fieldnames or []))

    def on_train_start(self, trainer, pl_module) -> None:
        writer = self.logger.experiment  # Lightning's writer: it deleted the file when it started
        start = trainer.current_epoch  # the first epoch this start trains (0-based, as the file counts)
        before = [r for r in self.rows if not str(r.get("epoch", "")).isdigit() or int(r["epoch"]) < start]
        keys = sorted(set(writer.metrics_keys) | set(self.header))
        with open(writer.metrics_file_path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=keys)
            out.writeheader()
            out.writerows(before)
        writer.metrics_keys = keys
