"""Embed every image of a dataset with a timm backbone: ``python -m mammo.embed``.

Writes into ``outputs/embeddings_<backbone>/``:
``features.npy`` ([N, D] float32, written incrementally into a memory-mapped file), ``joined.csv``
(one row per image: the sample metadata, ``row`` = the row in features.npy, and the flattened
embedding ``f0 … f<D-1>``), ``preview/embeddings_{pca,tsne,umap}.png`` and ``sample_grid.png``,
``clustering_metrics.json``, ``summary.json`` (``experiment_type: embedding_extraction``), ``run.log``.
The work is ``mammo.embeddings.extract``.
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


@hydra.main(config_path=CONFIG_DIR, config_name="embed", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import command, say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.workflows.embedding_job import embed

    log.info("Starting embedding extraction (%s)", cfg.embed.backbone)
    out = Path(cfg.paths.run_dir)
    run_recorded("embedding_extraction", out, cfg.seed, lambda folder, s: embed(cfg, folder, s))
    baselines = command("mammo.baselines", f"embeddings_dir={out}") + "  (classical baselines)"
    say_closing("Embeddings", out / "features.npy", baselines)


if __name__ == "__main__":
    main()
