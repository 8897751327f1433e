"""Review a run: ``python -m mammo.review <run dir | evaluation dir | CV dir> [--split val]``, or
a dataset before any training: ``python -m mammo.review data=dicom_csv data.csv=... data.dicom_root=...``.

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

from mammo.artifacts.closing import closing_line, command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a review page: of a run, evaluation or CV directory, or (given data=... "
        "overrides instead) of a dataset before any training."
    )
    parser.add_argument("target", nargs="+", help="a run, evaluation or CV directory; or data overrides")
    parser.add_argument("--split", default="auto", choices=["auto", "test", "val", "eval"])
    parser.add_argument("--per-cell", type=int, default=24, help="images shown per confusion cell (errors)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples of the subgroups' intervals")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--deidentify",
        action="store_true",
        help="a page to share: patient, exam and image ids as pseudonyms, no file paths",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from mammo.core.errors import MammoError

    try:
        if all("=" in t for t in args.target):  # a dataset, composed as mammo.train composes it
            from mammo.workflows.data_review_job import build_data_review

            if args.deidentify:
                parser.error("--deidentify: for the page of a run, evaluation or CV directory")

            path = build_data_review(args.target)
        elif len(args.target) == 1:
            from mammo.review_pages.build import build_review

            path = build_review(
                Path(args.target[0]), args.split, args.per_cell, args.bootstrap, args.seed, args.deidentify
            )
        else:
            parser.error("give one folder, or data overrides (key=value) alone")
    except MammoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(closing_line("Review page", path, review_after(args.target, path, args.deidentify)))


def review_after(target: list[str], page: Path, deidentified: bool) -> str:
    """What to run after a page: train on a reviewed dataset, share a run's page."""
    if all("=" in t for t in target):
        return command("mammo.train", *target) + "  (train on this data)"
    if deidentified:
        return f"xdg-open {page}  (this page and its cards/ hold no id and no path: it can be shared)"
    return command("mammo.review", target[0], "--deidentify") + "  (a page to share)"


if __name__ == "__main__":
    main()
