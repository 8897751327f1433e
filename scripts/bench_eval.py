"""Evaluation benchmark: the patient bootstrap behind every 95 % interval.

    python scripts/bench_eval.py [--images 20000] [--resamples 1000]

Times :func:`mammo.evaluation.bootstrap.bootstrap_intervals` (every metric, all resamples) on
synthetic 4-class predictions, 4 images per patient, against one call of the reported metrics
(``density_metrics``, torchmetrics) times the number of resamples: what a loop over resamples
would cost at the least.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    import torch

    from mammo.evaluation.bootstrap import bootstrap_intervals
    from mammo.evaluation.metrics import density_metrics

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, args.images)
    logits = rng.normal(size=(args.images, 4)) + 1.5 * np.eye(4)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    patients = np.arange(args.images) // 4
    bootstrap_intervals(probs, targets, patients, 10, seed=0)  # warm-up
    start = time.perf_counter()
    intervals = bootstrap_intervals(probs, targets, patients, args.resamples, seed=0)
    vectorised = time.perf_counter() - start
    start = time.perf_counter()
    density_metrics(torch.tensor(probs), torch.tensor(targets))
    one = time.perf_counter() - start
    n = args.images
    print(
        f"{args.resamples} patient-bootstrap resamples of {n} images ({n // 4} patients), "
        f"{len(intervals)} metrics: {vectorised:.2f} s (goal: seconds)"
    )
    loop = one * args.resamples
    print(f"  one density_metrics call: {one * 1e3:.0f} ms -> a loop over the resamples: >= {loop:.0f} s")


if __name__ == "__main__":
    main()
