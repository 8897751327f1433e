"""``python -m mammo.predict``'s job: a checkpoint's predictions for unlabelled files, streamed to
CSV, read from its config."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import DataError
from mammo.evaluation.prediction import input_files, predict_files
from mammo.models.device import for_inference, resolve_device
from mammo.models.ensemble import load_predictor

log = logging.getLogger("mammo")


def predict(cfg: DictConfig, out: Path) -> dict:
    """Predict every input file into ``predictions.csv``; unreadable ones go to ``unreadable.csv``."""
    route_library_logs()
    if cfg.on_bad_file not in ("skip", "error"):
        raise DataError(f"on_bad_file={cfg.on_bad_file!r}: expected skip or error")
    checkpoint = load_predictor(cfg.ckpt, cfg.get("tta"))
    if checkpoint.model.hparams.embeddings_fusion:
        raise DataError(
            "predict: this checkpoint fuses precomputed embeddings; use mammo.evaluate with its data"
        )
    files = input_files(str(cfg.input), cfg.path_column)
    device = resolve_device(cfg.device)
    log.info(
        "Predicting %d file(s) with %s (%s) on %s",
        len(files),
        checkpoint.path,
        checkpoint.meta.get("arch"),
        device,
    )
    checkpoint.model = for_inference(checkpoint.model, device)
    stop = cfg.on_bad_file == "error"
    predicted, unreadable, units = predict_files(
        checkpoint, files, out, int(cfg.batch_size), int(cfg.num_workers), stop, str(cfg.eval.aggregate)
    )
    return {
        "checkpoint": str(checkpoint.path),
        "input": str(cfg.input),
        "num_predicted": predicted,
        "num_unreadable": unreadable,
        "num_breasts": units.get("breast"),
        "num_exams": units.get("exam"),
        **checkpoint.record(),
    }
