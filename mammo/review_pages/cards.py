"""The review's image cards: each shown image as the model saw it, the file it came from with the
crop box and the chest wall marked, and the Grad-CAM of the predicted class."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from PIL import Image

from mammo.core.errors import MammoError
from mammo.data.cache import safe_name
from mammo.data.images import Prepared, Preprocessing
from mammo.evaluation.gradcam import gradcam
from mammo.models.checkpoint import load_checkpoint

log = logging.getLogger("mammo")
PANEL_HEIGHT = 240
BOX, CHEST_WALL = (230, 40, 40), (250, 200, 30)


def ranked_cells(frame: pd.DataFrame) -> dict[tuple[int, int], pd.DataFrame]:
    """Every (true, predicted) cell's images, the most confident first: the probability the model
    gave the predicted class (for an error, the wrong class it chose)."""
    cells = {}
    for (true, predicted), part in frame.groupby(["true_label", "predicted_label"], sort=True):
        score = part[f"prob_class{int(predicted)}"]
        cells[(int(true), int(predicted))] = part.loc[score.sort_values(ascending=False, kind="stable").index]
    return cells


def card_name(image_id: str) -> str:
    """A file name for an image's card: readable, and unique per image id (ids that the readable
    part maps to one name, a space and a dash or two accented letters, differ in the hash of the
    whole id), the same in every run.

    >>> card_name("ACC00001/L_CC")
    'ACC00001-L_CC.4167d8f453.png'
    >>> card_name("P 1/L_CC") != card_name("P-1/L_CC") and card_name("é/L") != card_name("è/L")
    True
    """
    digest = hashlib.sha256(image_id.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{safe_name(image_id)}.{digest}.png"


def write_cards(source, rows: pd.DataFrame, folder: Path, batch_size: int = 16) -> dict[str, dict]:
    """A card image for each row under ``folder/cards/``; per image_id ``{"file": relative path or
    None, "note": why there is none, or ""}``. Each checkpoint is loaded once; Grad-CAM runs in
    batches."""
    (folder / "cards").mkdir(parents=True, exist_ok=True)
    paths, cards, classes = source.image_paths(), {}, source.class_labels
    shown = source.shown_paths()
    for checkpoint, part in rows.groupby(rows.apply(source.checkpoint_of, axis=1).astype(str), sort=False):
        model, preprocessing, fused = load_model(Path(checkpoint))
        prepared = {}
        for _, row in part.iterrows():
            path = paths.get(row["image_id"])
            made = prepare(row, path, preprocessing)
            if isinstance(made, dict):
                cards[row["image_id"]] = made
            else:
                prepared[row["image_id"]] = (row, made, path)
        items = list(prepared.values())
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            cams = [None] * len(batch) if fused else grad_cams(model, batch, classes)
            for (row, made, _), cam in zip(batch, cams):
                cards[row["image_id"]] = save_card(row, made, cam, folder)
    return {
        image_id: shown_file(card, paths.get(image_id), shown.get(image_id, ""))
        for image_id, card in cards.items()
    }


def shown_file(card: dict, path: Path | None, shown: str) -> dict:
    """A card's facts with its file named as the page may name it: ``shown`` (the path below the
    data's root; ``""`` on a de-identified page) in place of the file's path on this machine."""
    note = card.get("note") or ""
    if path is not None:
        note = note.replace(str(path), shown or "the file")
    return {**card, "note": note, "path": shown}


def load_model(path: Path):
    """The checkpoint's model (CPU, eval), its preprocessing, and whether it fuses embeddings."""
    checkpoint = load_checkpoint(path)
    fused = bool(checkpoint.model.hparams.embeddings_fusion)
    return checkpoint.model.float().eval(), Preprocessing(**checkpoint.preprocessing), fused


def prepare(row, path: Path | None, preprocessing: Preprocessing) -> Prepared | dict:
    """The image as the model saw it, or the card's note when its file cannot be read."""
    if path is None or not path.is_file():
        return {"file": None, "note": "DICOM not found" + ("" if path else " (not in data_manifest.json)")}
    try:
        return preprocessing.prepare(path, str(row.get("laterality") or "") or None)
    except MammoError as exc:
        return {"file": None, "note": str(exc)}


def grad_cams(model, batch: list, classes: list[int]) -> list[np.ndarray]:
    """Grad-CAM of each image's predicted class (the model is not a fusion model)."""
    x = torch.from_numpy(np.stack([made.image for _, made, _ in batch]))[:, None]
    targets = torch.tensor([classes.index(int(row["predicted_label"])) for row, _, _ in batch])
    return list(gradcam(model, x, targets).numpy())


def input_cards(
    rows: pd.DataFrame, paths: dict, preprocessing: Preprocessing, folder: Path, shown: dict
) -> dict[str, dict]:
    """Cards of the file and the model input alone (a data review: no model yet); ``shown``: the
    path each card names."""
    (folder / "cards").mkdir(parents=True, exist_ok=True)
    cards = {}
    for _, row in rows.iterrows():
        path = paths.get(row["image_id"])
        made = prepare(row, path, preprocessing)
        card = made if isinstance(made, dict) else save_card(row, made, None, folder, "")
        cards[row["image_id"]] = shown_file(card, path, shown.get(row["image_id"], ""))
    return cards


def save_card(row, prepared: Prepared, cam, folder: Path, note: str | None = None) -> dict:
    name = Path("cards") / card_name(row["image_id"])
    card_image(prepared, cam).save(folder / name)
    note = note if note is not None else "" if cam is not None else "no Grad-CAM: the model fuses embeddings"
    return {
        "file": name.as_posix(),
        "note": note,
        "scanner": prepared.manufacturer,
    }


def card_image(prepared: Prepared, cam: np.ndarray | None) -> Image.Image:
    """Three panels side by side: the file (crop box red, chest-wall edge yellow), the model's
    input, and the Grad-CAM of the predicted class over the input."""
    source = rgb(prepared.thumb)
    y0, y1, x0, x1 = prepared.box
    source[y0:y1, [x0, max(x0, x1 - 1)]] = BOX
    source[[y0, max(y0, y1 - 1)], x0:x1] = BOX
    edge = slice(0, 3) if prepared.chest_wall == "left" else slice(-3, None)
    source[:, edge] = CHEST_WALL
    panels = [source, rgb(prepared.image)]
    if cam is not None:
        heat = colormaps["jet"](cam)[..., :3] * 255
        panels.append((0.55 * rgb(prepared.image) + 0.45 * heat).astype(np.uint8))
    return side_by_side([Image.fromarray(p) for p in panels])


def rgb(image: np.ndarray) -> np.ndarray:
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def side_by_side(panels: list[Image.Image], gap: int = 14) -> Image.Image:
    scaled = [p.resize((max(1, round(p.width * PANEL_HEIGHT / p.height)), PANEL_HEIGHT)) for p in panels]
    out = Image.new("RGB", (sum(p.width for p in scaled) + gap * (len(scaled) - 1), PANEL_HEIGHT), "white")
    x = 0
    for panel in scaled:
        out.paste(panel, (x, 0))
        x += panel.width + gap
    return out
