"""Predict density for unlabelled exams: ``python -m mammo.predict ckpt=... input=...``.

``input`` is a DICOM file, a folder (every file below it) or a CSV with an ``image_path`` column.
Images are preprocessed exactly as the checkpoint's training data and streamed in batches; rows
are appended to ``outputs/predictions/results_N/predictions.csv`` as they come (``image``,
``AccessionNumber`` when the header has one, ``predicted_density`` 1-4, ``predicted_letter`` A-D,
``prob_class1..4``). Unreadable files go to ``unreadable.csv`` with the reason (or stop the run
with ``on_bad_file=error``). The work is ``mammo.evaluation.prediction``.
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


@hydra.main(config_path=CONFIG_DIR, config_name="predict", execution_whitelist=TRUSTED_TARGETS)
@trusted_task(TRUSTED_TARGETS)
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.closing import command, say_closing  # here, not above: --help stays fast
    from mammo.artifacts.summary import run_recorded
    from mammo.workflows.prediction_job import predict

    out = Path(cfg.paths.run_dir)
    run_recorded("prediction", out, cfg.seed, lambda folder, _: predict(cfg, folder))
    labelled = command("mammo.evaluate", f"ckpt={cfg.ckpt}", "data=dicom_csv", "data.csv=<labels.csv>")
    say_closing("Predictions", out / "predictions.csv", labelled + "  (with labels: metrics and intervals)")


if __name__ == "__main__":
    main()
