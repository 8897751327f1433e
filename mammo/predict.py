"""Predict density for unlabelled exams: ``python -m mammo.predict ckpt=... input=...``.

``input`` is a DICOM file, a folder (every file below it) or a CSV with an ``image_path`` column.
Images are preprocessed exactly as the checkpoint's training data and streamed in batches; rows
are appended to ``outputs/predictions/results_N/predictions.csv`` as they come (``image``,
``AccessionNumber`` when the header has one, ``predicted_density`` 1-4, ``predicted_letter`` A-D,
``prob_class1..4``). Unreadable files go to ``unreadable.csv`` with the reason (or stop the run
with ``on_bad_file=error``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Dataset

from mammo import CONFIG_DIR
from mammo.artifacts.rundir import register_resolvers
from mammo.errors import DataError

register_resolvers()
log = logging.getLogger("mammo")
LETTERS = {1: "A", 2: "B", 3: "C", 4: "D", 5: "5"}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    from mammo.artifacts.summary import run_recorded

    run_recorded("prediction", cfg.seed, lambda out, summary: predict(cfg, out))


def input_files(spec: str, path_column: str) -> list[Path]:
    """The files named by ``input``: a file, a folder's files (sorted), or a CSV's paths."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".csv" and path.is_file():
        import pandas as pd

        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if path_column not in table.columns:
            raise DataError(f"{path}: no {path_column!r} column; found: {', '.join(table.columns)}")
        return [path.parent / p for p in table[path_column]]
    if path.is_file():
        return [path]
    raise DataError(f"input: {spec} is not a file, folder or CSV")


class _Files(Dataset):
    def __init__(self, files: list[Path], preprocessing) -> None:
        self.files, self.preprocessing = files, preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from mammo.data.dicom import read_header

        try:
            header = read_header(self.files[i])
            image = self.preprocessing(self.files[i]).astype(np.float16)
        except DataError as exc:
            return i, None, "", str(exc)
        return i, image, str(header.get("AccessionNumber", "") or ""), ""


def predict(cfg: DictConfig, out: Path) -> dict:
    import torch
    from rich.progress import Progress
    from torch.utils.data import DataLoader

    from mammo.artifacts.runlog import route_library_logs
    from mammo.data.dataset import as_list
    from mammo.data.preprocess import Preprocessing
    from mammo.models.checkpoint import load_checkpoint

    route_library_logs()
    if cfg.on_bad_file not in ("skip", "error"):
        raise DataError(f"on_bad_file={cfg.on_bad_file!r}: expected skip or error")
    checkpoint = load_checkpoint(cfg.ckpt)
    if checkpoint.model.hparams.embeddings_fusion:
        raise DataError(
            "predict: this checkpoint fuses precomputed embeddings; use mammo.evaluate with its data"
        )
    classes = checkpoint.class_labels
    files = input_files(str(cfg.input), cfg.path_column)
    log.info("Predicting %d file(s) with %s (%s)", len(files), checkpoint.path, checkpoint.meta.get("arch"))
    loader = DataLoader(
        _Files(files, Preprocessing(**checkpoint.preprocessing)),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        collate_fn=as_list,
    )
    header = [
        "image",
        "AccessionNumber",
        "predicted_density",
        "predicted_letter",
        *[f"prob_class{c}" for c in classes],
    ]
    predicted = unreadable = 0
    with (
        open(out / "predictions.csv", "w", newline="") as pred_file,
        open(out / "unreadable.csv", "w", newline="") as bad_file,
        Progress(transient=True) as progress,
        torch.inference_mode(),
    ):
        rows, bad = csv.writer(pred_file), csv.writer(bad_file)
        rows.writerow(header)
        bad.writerow(["image", "reason"])
        task = progress.add_task("Predicting", total=len(files))
        for batch in loader:
            good = [b for b in batch if b[1] is not None]
            for i, _, _, reason in (b for b in batch if b[1] is None):
                if cfg.on_bad_file == "error":
                    raise DataError(reason)
                bad.writerow([str(files[i]), reason])
                unreadable += 1
            if good:
                images = torch.from_numpy(np.stack([b[1] for b in good]))[:, None]
                probs = checkpoint.model(images).softmax(1).double().numpy()
                for (i, _, accession, _), p in zip(good, probs):
                    density = classes[int(p.argmax())]
                    rows.writerow(
                        [str(files[i]), accession, density, LETTERS[density], *(f"{v:.9g}" for v in p)]
                    )
                predicted += len(good)
            pred_file.flush()
            progress.advance(task, len(batch))
    if unreadable:
        log.warning(
            "%d of %d file(s) unreadable; reasons in %s", unreadable, len(files), out / "unreadable.csv"
        )
    log.info("Predicted %d image(s): %s", predicted, out / "predictions.csv")
    return {
        "checkpoint": str(checkpoint.path),
        "input": str(cfg.input),
        "num_predicted": predicted,
        "num_unreadable": unreadable,
    }


if __name__ == "__main__":
    main()
