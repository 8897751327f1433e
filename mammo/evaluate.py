"""Evaluate a trained model on labelled data: ``python -m mammo.evaluate ckpt=<run>/best_model.pt``.

Writes ``outputs/evaluations/results_N/``: ``predictions.csv`` (the columns of val_predictions.csv),
``metrics/eval_metrics.{csv,json}`` and ``metrics/eval_confusion.png``,
``plots/gradcam_samples.png``, ``summary.json`` (``experiment_type: evaluation``, with the
checkpoint and its training run) and ``run.log``. ``split=val`` evaluates exactly the training
run's validation images (from its ``split.csv``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mammo import CONFIG_DIR
from mammo.artifacts.rundir import register_resolvers

register_resolvers()
log = logging.getLogger("mammo")
SPLITS = ("all", "val", "train")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.summary import run_recorded

    log.info("Evaluating %s", cfg.ckpt)
    run_recorded("evaluation", cfg.seed, lambda out, summary: evaluate(cfg, out, summary))


def evaluate(cfg: DictConfig, out: Path, summary) -> dict:
    import torch

    from mammo.artifacts.files import predictions_frame, write_metrics, write_predictions
    from mammo.artifacts.io import write_json
    from mammo.artifacts.plots import plot_confusion
    from mammo.artifacts.runlog import route_library_logs
    from mammo.errors import ConfigError
    from mammo.inference import checkpoint_datamodule, gradcam_figure, predict_probs
    from mammo.metrics import confusion_matrix, density_metrics
    from mammo.models.checkpoint import load_checkpoint

    route_library_logs()
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: expected one of {', '.join(SPLITS)}")
    checkpoint = load_checkpoint(cfg.ckpt)
    split_csv = None
    if cfg.split != "all":
        split_csv = checkpoint.run_dir / "split.csv"
        if not split_csv.is_file():
            raise ConfigError(f"split={cfg.split}: {split_csv} not found (the checkpoint's run directory)")
    datamodule = checkpoint_datamodule(cfg, checkpoint, str(split_csv) if split_csv else None)
    if split_csv:
        datamodule.setup("validate")
        table = datamodule.val_table if cfg.split == "val" else datamodule.train_table
    else:
        datamodule.prepare_samples()
        table = datamodule.samples.table
    if checkpoint.model.hparams.embeddings_fusion:
        datamodule.attach_embeddings(checkpoint.model.hparams.embeddings_dir)
    write_json(out / "data_manifest.json", datamodule.manifest)
    classes = checkpoint.class_labels
    log.info("Evaluating %d images (%s) with %s", len(table), cfg.split, checkpoint.meta.get("arch"))
    dataset = datamodule._dataset(table)
    probs = predict_probs(checkpoint.model, dataset, int(cfg.batch_size), int(cfg.data.num_workers))
    targets = torch.tensor(table["label"].to_numpy())
    metrics = density_metrics(torch.tensor(probs), targets)
    confusion = confusion_matrix(torch.tensor(probs), targets)
    write_predictions(out / "predictions.csv", predictions_frame(table, probs, classes))
    extra = {
        "num_samples": len(table),
        "class_labels": classes,
        "confusion_matrix": confusion,
        "split": cfg.split,
    }
    write_metrics(out / "metrics", "eval", metrics, extra)
    plot_confusion(
        confusion, classes, out / "metrics" / "eval_confusion.png", title=f"Evaluation ({cfg.split})"
    )
    for name, value in metrics.items():
        log.info("%s: %.4f", name, value)
    if cfg.gradcam_per_class:
        count = gradcam_figure(
            checkpoint.model,
            dataset,
            table,
            classes,
            int(cfg.gradcam_per_class),
            out / "plots" / "gradcam_samples.png",
        )
        log.info("Grad-CAM of %d images: %s", count, out / "plots" / "gradcam_samples.png")
    return {
        "checkpoint": str(checkpoint.path),
        "training_run": {"run_id": checkpoint.meta.get("run_id"), "run_dir": str(checkpoint.run_dir)},
        "data_config": {**datamodule.describe_samples(), "split": cfg.split, "num_evaluated": len(table)},
        "model_config": {
            "arch": checkpoint.meta.get("arch"),
            "backbone": checkpoint.meta.get("backbone"),
            "class_labels": classes,
        },
        "metrics": metrics,
    }


if __name__ == "__main__":
    main()
