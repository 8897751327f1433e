"""Classical baselines: ``python -m mammo.baselines``.

Logistic regression and an RBF SVM on the ``mammo.embed`` embeddings versus on classical features,
under one patient-grouped stratified k-fold (``mammo.embeddings.classical``). Writes
``<features>_<model>_metrics.json``, ``statistical_tests.json`` (paired t-test and Wilcoxon
signed-rank per model and metric, with effect sizes) and ``report.md`` into
``outputs/embeddings_baselines/``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR, TRUSTED_TARGETS
from mammo.artifacts.rundir import register_resolvers
from mammo.core.errors import install_compact_errors
from mammo.core.targets import trusted_task

register_resolvers()
install_compact_errors()


@hydra.main(config_path=CONFIG_DIR, config_name="baselines", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import command, say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.workflows.baselines_job import run_baselines

    out = Path(cfg.paths.run_dir)
    run_recorded("embeddings_baselines", out, cfg.seed, lambda folder, _: run_baselines(cfg, folder))
    runs = command("mammo.runs", Path(cfg.paths.output_dir)) + "  (every run's table)"
    say_closing("Baselines", out / "statistical_tests.json", runs)


if __name__ == "__main__":
    main()
