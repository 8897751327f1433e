"""Re-aggregate a cross-validation directory: ``python -m mammo.cv <results_k<K>_seed<S>>``.

``cv_summary.json`` and ``oof_predictions.csv`` are computed from the fold directories alone
(``mammo.evaluation.cross_validation``), e.g. after re-running one fold; a ``-m cv.fold=1,2,3``
sweep does this itself when it ends.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-aggregate cv_summary.json from a CV directory's folds.")
    parser.add_argument("cv_dir", type=Path, help="outputs/density_experiments/results_k<K>_seed<S>")
    parser.add_argument("--monitor", default="val_kappa", help="the metric reported as the objective")
    args = parser.parse_args(argv)
    from mammo.artifacts.closing import closing_line, command
    from mammo.core.errors import MammoError  # here, not above: --help stays fast
    from mammo.evaluation.cross_validation import aggregate

    try:
        summary = aggregate(args.cv_dir, monitor=args.monitor)
    except MammoError as exc:
        raise SystemExit(f"error: {exc}") from None
    objective = summary["objective"]
    print(
        f"{summary['num_folds_aggregated']}/{summary['num_folds']} folds, "
        f"{args.monitor} {objective['mean']:.4f} ± {objective['std']:.4f}"
    )
    review = command("mammo.review", args.cv_dir) + "  (the out-of-fold review)"
    print(closing_line("CV summary", args.cv_dir / "cv_summary.json", review))


if __name__ == "__main__":
    main()
