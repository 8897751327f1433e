"""``python -m mammo.predict``'s job: a checkpoint's predictions for unlabelled files, streamed to
CSV, read from its config."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import DataError
from mammo.data.cache import as_list
from mammo.data.images import Preprocessing
from mammo.data.units import TYPICAL_VIEWS, whole_unit_batches
from mammo.evaluation.prediction import (
    ImageFiles,
    file_units,
    input_files,
    stream_predictions,
    write_unit_predictions,
)
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
    dataset = ImageFiles(files, Preprocessing(**checkpoint.preprocessing))
    units, batch_size = None, int(cfg.batch_size)
    if checkpoint.unit:  # a multi-view model: batches of whole breasts (exams), grouped by header
        units = file_units(files, checkpoint.unit)
        batches = whole_unit_batches(units, max(1, batch_size // TYPICAL_VIEWS[checkpoint.unit]))
        loader = DataLoader(
            dataset, batch_sampler=batches, num_workers=int(cfg.num_workers), collate_fn=as_list
        )
    else:
        loader = DataLoader(dataset, batch_size, num_workers=int(cfg.num_workers), collate_fn=as_list)
    checkpoint.model = for_inference(checkpoint.model, device)
    stop = cfg.on_bad_file == "error"
    predicted, unreadable = stream_predictions(out, loader, files, checkpoint, stop, units)
    if unreadable:
        log.warning(
            "%d of %d file(s) unreadable; reasons in %s", unreadable, len(files), out / "unreadable.csv"
        )
    log.info("Predicted %d image(s): %s", predicted, out / "predictions.csv")
    units = write_unit_predictions(out, str(cfg.eval.aggregate), checkpoint.unit)
    return {
        "checkpoint": str(checkpoint.path),
        "input": str(cfg.input),
        "num_predicted": predicted,
        "num_unreadable": unreadable,
        "num_breasts": units.get("breast"),
        "num_exams": units.get("exam"),
        **checkpoint.record(),
    }
