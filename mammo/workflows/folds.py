"""k-fold cross-validation in one job: fold 1..K one after another, then ``cv_summary.json``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from mammo.artifacts.io import write_json
from mammo.artifacts.runlog import RunLogFilter, RunLogFormatter
from mammo.core.errors import MammoError, unwrap_worker_error
from mammo.distributed.collectives import broadcast_from_rank_zero
from mammo.distributed.ranks import is_rank_zero
from mammo.evaluation.cross_validation import aggregate
from mammo.workflows.fit import fit_run

log = logging.getLogger("mammo")


def run_all_folds(cfg, cv_dir: Path, link=None) -> float:
    """Train fold 1..K one after another in this process; write the CV artifacts; return the
    mean of the monitored metric over the folds (the objective for sweeps).

    With ``link`` (an HPO trial with a pruner, ``mammo.hpo.trial``) the running mean is reported
    after every fold (step = fold - 1) and the remaining folds are skipped once the pruner says so;
    ``cv_summary.json`` then covers the folds run and says ``"status": "pruned"``.
    """
    folds = int(cfg.cv.folds)
    log.info("Cross-validation: %d folds, seed %s, in %s", folds, cfg.seed, cv_dir)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    writes = is_rank_zero()  # under DDP only rank zero writes logs and the CV summary
    failed, values = [], []
    for fold in range(1, folds + 1):
        fold_dir = cv_dir / f"fold_{fold}" / "results"
        with fold_log(fold_dir / "run.log" if writes else None):
            try:
                values.append(fit_run(cfg, fold_dir, fold=fold, datamodule=datamodule, cv_dir=cv_dir))
            except Exception as exc:  # a failed fold is recorded; the others still run
                failed.append(fold)
                log.error("Fold %d failed: %s", fold, unwrap_worker_error(exc))
        if link is not None and values and pruned_after(cfg, link, fold, float(np.nanmean(values))):
            break
    if not writes:
        return float("nan")  # the objective is rank zero's
    summary = aggregate(cv_dir, experiment_name=f"density_k{folds}_seed{cfg.seed}", monitor=cfg.monitor)
    if link is not None and link.pruned:
        summary.update(status="pruned", pruned=link.describe())
        write_json(cv_dir / "cv_summary.json", summary)
    if failed:
        raise MammoError(f"cv: fold(s) {failed} of {folds} failed; see {cv_dir}/cv_summary.json")
    value = summary["objective"]["mean"]
    log.info("CV %s: %.4f ± %.4f over %d folds", cfg.monitor, value, summary["objective"]["std"], folds)
    return value


def pruned_after(cfg, link, fold: int, mean: float) -> bool:
    """Report the running CV mean after ``fold``; whether the pruner stops the trial (the last
    fold is reported, not judged). Under DDP rank zero asks and every rank gets its answer."""
    folds = int(cfg.cv.folds)
    prune = link.should_prune(mean, fold - 1, ask=fold < folds) if link.trial is not None else False
    if not broadcast_from_rank_zero(prune):
        return False
    log.info(
        "Optuna pruned trial %d after fold %d of %d (running CV %s %.4f): skipping the rest",
        link.number,
        fold,
        folds,
        cfg.monitor,
        mean,
    )
    return True


class fold_log:  # noqa: N801 (used as a context manager)
    """Also write the log to a fold's own run.log, formatted and filtered like Hydra's run.log."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: no fold log (another DDP rank)
        self.handler = None

    def __enter__(self):
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="w", encoding="utf-8")
        self.handler.setFormatter(RunLogFormatter())
        self.handler.addFilter(RunLogFilter())
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.handler is None:
            return
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
