"""``logger=wandb``: Lightning's ``WandbLogger``, with what a mammo run adds to its W&B run.

Imported only when the config names it (the ``wandb`` extra, in the lock file), like MLflow's:

* the run is named after its directory (``results_N``, ``fold_K/results``) and grouped with the
  runs it belongs with: an HPO study's trials, a CV job's folds, a multirun's jobs;
* its config is the run's composed config (``start_trackers``), its metrics every epoch's
  (Lightning) and, at the end, the best epoch's (``best_*``) in the run's summary with mammo's
  status, and the run's plots as images;
* without an API key (``WANDB_API_KEY`` or ``wandb login``) it runs offline, saying so in one line
  with the folder ``wandb sync`` uploads. The key is W&B's own business: mammo never reads it
  into a file or a line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from mammo.artifacts.mlflow_tracking import run_name
from mammo.core.errors import install_compact_errors

log = logging.getLogger("mammo")


def has_api_key() -> bool:
    """Whether W&B can log in: ``WANDB_API_KEY``, or a ``wandb login`` in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")


def multirun_group() -> str | None:
    """The sweep folder's name of a Hydra multirun's job, ``None`` for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


class MammoWandbLogger(WandbLogger):
    """A ``WandbLogger`` for the run in ``save_dir`` (see the module docstring).

    Args:
        project: the W&B project (the experiment's folder name, ``mammo_tiny_density``).
        save_dir: the run directory (build_trainer passes it to every logger); W&B's files go to
            its ``wandb/`` folder.
        study: the HPO study this run is a trial of, or ``None``.
        cv_dir: the CV job this run is a fold of, or ``None``.
        mode: ``online``, ``offline``, or ``None``: online with an API key, else offline.
    """

    integration_key = "wandb_run_id"

    def __init__(
        self,
        project: str,
        save_dir: str,
        study: str | None = None,
        cv_dir: str | None = None,
        mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.run_dir = Path(save_dir)
        offline = mode == "offline" or (mode is None and not has_api_key())
        group = study or (Path(cv_dir).name if cv_dir else None) or multirun_group()
        super().__init__(
            name=run_name(self.run_dir, cv_dir),
            project=project,
            save_dir=str(self.run_dir),
            offline=offline,
            group=group,
            job_type="train",
            log_model=False,
            **kwargs,
        )
        if offline:
            log.info(
                "W&B: no API key (WANDB_API_KEY or wandb login): the run is kept offline in %s; upload "
                "it with: wandb sync %s",
                self.run_dir / "wandb",
                self.run_dir / "wandb" / "offline-run-*",
            )

    @property
    def run_id(self) -> str:
        """The W&B run's id (starting the run: ``wandb.init``, which puts its own hook in
        ``sys.excepthook``; mammo's one-line errors are put back in front of it)."""
        run_id = self.experiment.id
        install_compact_errors()
        return run_id

    def record_config(self, config: dict) -> None:
        """The run's composed config as the W&B run's config."""
        self.experiment.config.update(config, allow_val_change=True)

    def record_run(self, summary: dict) -> None:
        """The end of the run as summary.json records it: best metrics and status in the W&B
        run's summary, the plots as images, the run finished (failed runs with exit code 1)."""
        import wandb

        run, status = self.experiment, summary.get("status", "unknown")
        best = {k: v for k, v in summary.items() if k.startswith("best_") and isinstance(v, int | float)}
        run.summary.update({**best, "mammo_status": status, "mammo_run_dir": str(self.run_dir.resolve())})
        plots = sorted((self.run_dir / "plots").glob("*.png"))
        if plots:
            run.log({f"plots/{path.stem}": wandb.Image(str(path)) for path in plots})
        run.finish(exit_code=0 if status in ("completed", "pruned") else 1)
        install_compact_errors()  # whatever hook W&B left behind, a mammo error stays one line
