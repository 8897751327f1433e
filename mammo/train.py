"""Train a density classifier: ``python -m mammo.train [key=value ...]``.

Hydra composes ``conf/train.yaml``; the job (``mammo.workflows.training_job.train``) instantiates the
datamodule, model, callbacks and trainer from it, fits, and returns the best epoch's monitored
metric (the objective for sweeps). The workflow is imported inside the entry so that ``--help``
stays fast.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.redact import hide_argv_passwords
from mammo.artifacts.rundir import register_resolvers
from mammo.core import interrupts
from mammo.core.errors import install_compact_errors

register_resolvers()
install_compact_errors()


@hydra.main(config_path=CONFIG_DIR, config_name="train", execution_whitelist=TRUSTED_TARGETS)
def hydra_entry(cfg: DictConfig) -> float:
    return train(cfg)


def train(cfg: DictConfig) -> float:
    """The task function: one training job (see ``mammo.workflows.training_job.train``)."""
    from mammo.workflows.training_job import train as train_job

    return train_job(cfg)


def main() -> None:
    """``python -m mammo.train [overrides]``: Hydra's entry, stoppable by Ctrl-C at any moment.

    SIGINT raises ``KeyboardInterrupt`` even where the process was started with it ignored (a
    background job of a script inherits that), one that something swallowed still stops the run
    (``mammo.core.interrupts``), and Lightning's graceful shutdown, which ignores SIGINT from then on,
    is undone when the run ends. An interrupted run (Ctrl-C or SIGTERM) has
    recorded its status and resume command by the time it gets here; it ends with one line and
    exit code 1, like any other failed run.
    """
    interrupts.install()
    hide_argv_passwords()  # before Hydra reads the command line (mammo.artifacts.redact)
    try:
        hydra_entry()
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"Interrupted{f': {exc}' if str(exc) else ''}\n")
        raise SystemExit(1) from None
    finally:
        interrupts.install()


if __name__ == "__main__":
    main()
