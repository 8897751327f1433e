"""The breast on a mammogram's display thumbnail: its box, the bright regions that are not it
(burnt-in labels, markers, a film's frame) and the side its chest wall is on; and the crops that
found nothing to leave out."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

log = logging.getLogger("mammo")

NEARLY_WHOLE = 0.95
"""A breast crop that keeps this share of the image or more found nothing to leave out."""


CHEST_WALL_SOURCES = ("orientation", "laterality", "brightness")
"""What decided an image's chest-wall side, in the order :func:`chest_wall_side` tries them."""


class Region(NamedTuple):
    """The breast found on a display thumbnail."""

    box: tuple[int, int, int, int]
    """``(y0, y1, x0, x1)``: the breast with its margin (the whole thumbnail when none is found)."""
    labels: np.ndarray | None
    """The other bright regions inside the box (labels, markers), or ``None`` when there are none."""
    breast: np.ndarray | None
    """The breast's mask on the thumbnail, ``None`` when no region stands out."""

    def breast_share_of_box(self) -> float:
        """The share of the box the breast covers (1.0 when no breast was found)."""
        if self.breast is None:
            return 1.0
        y0, y1, x0, x1 = self.box
        return float(self.breast[y0:y1, x0:x1].mean()) if y1 > y0 and x1 > x0 else 0.0


def breast_region(thumb: np.ndarray, pad: float = 0.02) -> Region:
    """The breast on a display thumbnail (:class:`Region`): its box, the other bright regions
    (labels, markers) inside the box, and its mask.

    The breast is the largest connected region brighter than the background (10 % of the way
    from the 2nd to the 98th percentile, capped at Otsu's threshold so that a dark image still
    separates), ignoring a 1 % border where detector edges often glow, and apart from thin bright
    lines (:func:`largest_region`: a digitised film's frame), which are blanked like labels. The
    box gets ``pad`` of margin and reaches the image edge when the breast does (the chest wall).
    """
    from scipy import ndimage

    h, w = thumb.shape
    low, high = np.percentile(thumb, [2.0, 98.0])
    mask = thumb > min(low + 0.1 * (high - low), otsu_threshold(thumb))
    margin = max(1, round(0.01 * min(h, w)))
    mask[:margin], mask[-margin:], mask[:, :margin], mask[:, -margin:] = False, False, False, False
    breast = largest_region(mask, thin_line_width(h, w))
    if breast is None:
        return Region((0, h, 0, w), None, None)
    rows, cols = np.flatnonzero(breast.any(axis=1)), np.flatnonzero(breast.any(axis=0))
    py, px = round(pad * h), round(pad * w)
    y0, y1 = max(0, rows[0] - py), min(h, rows[-1] + 1 + py)
    x0, x1 = max(0, cols[0] - px), min(w, cols[-1] + 1 + px)
    y0, x0 = (0 if y0 <= margin + 1 else y0), (0 if x0 <= margin + 1 else x0)
    y1, x1 = (h if y1 >= h - margin - 1 else y1), (w if x1 >= w - margin - 1 else x1)
    others = mask & ~breast
    if not others[y0:y1, x0:x1].any():
        return Region((y0, y1, x0, x1), None, breast)
    return Region((y0, y1, x0, x1), ndimage.binary_dilation(others, iterations=2) & ~breast, breast)


def thin_line_width(height: int, width: int) -> int:
    """Bright structures narrower than this many thumbnail pixels are lines, not breast tissue
    (2.5 % of the short side, at least 3): a digitised film's frame, a detector edge."""
    return max(3, round(0.025 * min(height, width)))


def largest_region(mask: np.ndarray, line_width: int) -> np.ndarray | None:
    """The largest connected region of ``mask`` once thin lines are shed (a morphological opening
    with a ``line_width`` square), grown back over the skin line the opening shaved; ``None`` if
    ``mask`` is empty. A film's bright frame, joined to the breast at the chest-wall edge, would
    otherwise make the whole image one region. Without the opening when nothing survives it (a
    tiny image)."""
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, structure=np.ones((line_width, line_width), bool))
    core = opened if opened.any() else mask
    components, n = ndimage.label(core)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(core, components, index=np.arange(1, n + 1))
    largest = components == int(np.argmax(sizes)) + 1
    if core is mask:
        return largest
    return ndimage.binary_dilation(largest, iterations=line_width) & mask


def otsu_threshold(image: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance)."""
    hist, edges = np.histogram(image, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def chest_wall_side(ds, laterality: str | None, thumb: np.ndarray) -> tuple[str, str]:
    """``left`` or ``right`` (the image edge the chest wall is on), and what decided it (one of
    :data:`CHEST_WALL_SOURCES`).

    In order: the DICOM Patient Orientation (the row direction points anterior, towards the
    nipple, when the chest wall is on the left); the laterality (CSV, Image Laterality or
    Laterality; the standard hanging puts a left breast's chest wall on the left); the brighter
    image half, a guess worth a look.
    """
    orientation = ds.get("PatientOrientation")
    if orientation and len(orientation) >= 1 and str(orientation[0])[:1] in ("A", "P"):
        return ("left" if str(orientation[0]).startswith("A") else "right"), "orientation"
    side = laterality or ds.get("ImageLaterality") or ds.get("Laterality")
    if str(side).strip().upper() in ("L", "R"):
        return ("left" if str(side).strip().upper() == "L" else "right"), "laterality"
    half = thumb.shape[1] // 2
    return ("left" if thumb[:, :half].sum() >= thumb[:, -half:].sum() else "right"), "brightness"


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1).astype(int)
    return mask[np.ix_(rows, cols)]


def report_nearly_whole_crops(image_ids: list[str], facts: dict, cropped: bool, listed: int = 100) -> dict:
    """A ``WARNING:`` naming the images whose breast crop kept nearly the whole image (a film's
    frame or a border it could not separate from the breast: worth a look), and the cache
    statistics' ``nearly_whole_crops`` (count) and ``nearly_whole_crop_images`` (the first
    ``listed``). ``facts`` maps an image's position to how it was made
    (:class:`~mammo.data.preprocess.Facts`; ``None``: a bad file); nothing is counted without the
    crop (``cropped`` false)."""
    whole = [
        image_ids[i]
        for i, made in sorted(facts.items())
        if cropped and made is not None and made.crop_share >= NEARLY_WHOLE
    ]
    if whole:
        log.warning(
            "%d image(s) kept %d%% or more of their area in the breast crop (a frame or border joined to "
            "the breast?); look at them: %s%s",
            len(whole),
            round(NEARLY_WHOLE * 100),
            ", ".join(whole[:10]),
            " ..." if len(whole) > 10 else "",
        )
    return {"nearly_whole_crops": len(whole), "nearly_whole_crop_images": whole[:listed]}
