"""Evaluate a trained model on labelled data: ``python -m mammo.evaluate ckpt=<run>/best_model.pt``.

Writes ``outputs/evaluations/results_N/``: ``predictions.csv`` (the columns of val_predictions.csv),
``metrics/eval_metrics.{csv,json}`` and ``metrics/eval_confusion.png``,
``plots/gradcam_samples.png``, ``summary.json`` (``experiment_type: evaluation``, with the
checkpoint and its training run) and ``run.log``. ``split=val`` evaluates exactly the training
run's validation images (from its ``split.csv``). The work is ``mammo.evaluation.checkpoint_eval``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.rundir import register_resolvers
from mammo.core.errors import install_compact_errors
from mammo.core.targets import trusted_task

register_resolvers()
install_compact_errors()
log = logging.getLogger("mammo")


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import review_next, say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.workflows.evaluation_job import evaluate

    log.info("Evaluating %s", cfg.ckpt)
    run_recorded("evaluation", Path(cfg.paths.run_dir), cfg.seed, lambda out, s: evaluate(cfg, out, s))
    if cfg.get("review"):
        from mammo.review_pages.build import write_review
        from mammo.workflows.components import eval_settings

        write_review(Path(cfg.paths.run_dir), eval_settings(cfg).bootstrap, int(cfg.seed), cfg.review)
    say_closing(*review_next(Path(cfg.paths.run_dir)))


if __name__ == "__main__":
    main()
