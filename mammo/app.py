"""The app for the people around a model: ``python -m mammo.app ckpt=<run | best_model.pt | ensemble>``.

One web page (Gradio, the ``app`` extra) on 127.0.0.1:7860: **Predict** (drop DICOM files or a
zip; the density at image, breast and exam level with each image's crop, input and Grad-CAM, as
``mammo.predict`` computes it), **Browse** (the run's images, filtered; an exam opened whole) and
**Adjudicate** (a reader works through the model's confident errors mixed with controls; each
reading is appended to ``<folder>/readings/<reader>.csv``; quadratic κ between readers, labels
and the model). Every event is also an HTTP API endpoint. Uploads and run.log go to
``outputs/app/results_N/``. The work is ``mammo.webapp`` and ``mammo.workflows.app_job``.
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


@hydra.main(config_path=CONFIG_DIR, config_name="app", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import command, say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.workflows.app_job import serve

    out = Path(cfg.paths.run_dir)
    run_recorded("app", out, cfg.seed, lambda folder, _: serve(cfg, folder))
    trained = command("mammo.train", "data.readings=[<the folder read>]")
    say_closing(
        "App stopped; uploads", out / "uploads", trained + "  (with the run's settings: the readers' labels)"
    )


if __name__ == "__main__":
    main()
