"""Review a run: ``python -m mammo.review <run dir | evaluation dir | CV dir> [--split val]``.

Writes ``review/index.html`` into that folder: a static page (no server, nothing from the
internet; it opens from ``file://``) with the metrics and their intervals, a confusion matrix whose
cells link to their images, the errors ranked most confident first (each image as the model saw
it, the file with the crop box and the chest wall marked, the Grad-CAM of the predicted class),
the subgroups (scanner, view, laterality), the data checks and the training curves
(``mammo.review_pages``). It reads the folder's own files and the DICOMs of the images it shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a run's review page (review/index.html).")
    parser.add_argument("folder", type=Path, help="a run, evaluation or CV directory")
    parser.add_argument("--split", default="auto", choices=["auto", "test", "val", "eval"])
    parser.add_argument("--per-cell", type=int, default=24, help="images shown per confusion cell (errors)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of the subgroups' intervals")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from mammo.errors import MammoError
    from mammo.review_pages.build import build_review

    try:
        path = build_review(args.folder, args.split, args.per_cell, args.bootstrap, args.seed)
    except MammoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"written: {path}")


if __name__ == "__main__":
    main()
