"""List and compare runs without jq: ``python -m mammo.runs [outputs/] [options]``.

Finds every ``summary.json`` below the folder (training runs, CV folds, HPO trials, embeddings,
evaluations, predictions) and prints one row per run::

    python -m mammo.runs                                  # everything under outputs/
    python -m mammo.runs --sort best --filter status=completed --filter arch=tiny
    python -m mammo.runs --csv > runs.csv
    python -m mammo.runs --compare outputs/mammo_tiny_density/results_1 outputs/mammo_tiny_density/results_2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mammo.artifacts.run_index import COLUMNS, compare, find_runs, format_table, select


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="List the runs under a folder (default outputs/).")
    parser.add_argument("root", nargs="?", default="outputs", type=Path)
    parser.add_argument("--sort", help=f"sort by a column: {', '.join(COLUMNS)}")
    parser.add_argument("--desc", action="store_true", help="descending sort")
    parser.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE")
    parser.add_argument("--csv", action="store_true", help="CSV instead of an aligned table")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), type=Path)
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return
    if not args.root.is_dir():
        raise SystemExit(f"error: {args.root} is not a folder")
    rows = select(find_runs(args.root), args.filter, args.sort, args.desc)
    if args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=[*COLUMNS, "path"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(format_table(rows))


if __name__ == "__main__":
    main()
