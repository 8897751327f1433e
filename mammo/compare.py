"""Is A better than B: ``python -m mammo.compare <run or evaluation A> <B> [options]``.

Compares two training runs' or evaluations' predictions on the images both predicted (matched by
``image_id``): per metric and level, A, B, A - B with a paired patient-bootstrap 95 % interval,
and McNemar's exact test on per-image correctness, then the same per subgroup (scanner, view,
laterality, label-file columns; ``mammo.evaluation.comparison``). Writes
``outputs/comparisons/results_N/comparison.{json,md}`` and prints the table::

    python -m mammo.compare outputs/mammo_efficientnetb0_density/results_1 \\
        outputs/mammo_resnet50_density/results_1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mammo import CONFIG_DIR
from mammo.artifacts.closing import closing_line, command


def main(argv: list[str] | None = None) -> None:
    defaults = OmegaConf.load(Path(CONFIG_DIR) / "eval" / "default.yaml")  # the one eval setting
    parser = argparse.ArgumentParser(description="Compare two runs' or evaluations' predictions.")
    parser.add_argument("a", type=Path, help="run or evaluation directory A")
    parser.add_argument("b", type=Path, help="run or evaluation directory B")
    parser.add_argument(
        "--split",
        default="auto",
        choices=["auto", "test", "val", "eval"],
        help="which predictions of a run: auto (test, else val; eval for an evaluation)",
    )
    parser.add_argument("--bootstrap", type=int, default=int(defaults.bootstrap), help="paired resamples")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--aggregate", default=str(defaults.aggregate), choices=["mean", "max"])
    parser.add_argument("--out", type=Path, help="output folder (default: outputs/comparisons/results_N)")
    args = parser.parse_args(argv)

    from mammo.artifacts.rundir import allocate_run_dir
    from mammo.core.errors import MammoError
    from mammo.evaluation.comparison import comparison, comparison_table, write_comparison

    try:
        result = comparison(args.a, args.b, args.split, args.bootstrap, args.seed, args.aggregate)
        out = args.out or allocate_run_dir(Path("outputs") / "comparisons")  # only for a comparison made
        write_comparison(result, out)
    except MammoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if not result["data"]["same"]:
        print(
            f"WARNING: A and B were run on different data: B has, against A, {result['data']['b_against_a']}",
            file=sys.stderr,
        )
    print(comparison_table(result), end="")
    report = command("mammo.report", f"runs=[{args.a},{args.b}]") + "  (figures and tables of both)"
    print(closing_line("Comparison", out / "comparison.md", report))


if __name__ == "__main__":
    main()
