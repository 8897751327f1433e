"""k-fold cross-validation: run every fold in one job, and aggregate fold directories.

Layout (``cv=kfold``)::

    outputs/density_experiments/results_k<K>_seed<S>/
    ├── folds.csv             image_id, AccessionNumber, PatientID, label, fold
    ├── fold_<k>/results/     a complete run directory per fold (summary.json, run.log, ...)
    ├── oof_predictions.csv   every image once, predicted by the fold that held it out
    ├── cv_summary.json       mean/std/values per metric, fold details, OOF metrics
    └── run.log               the CV job's log (all folds in one job only)

``cv_summary.json`` is computed from the fold directories alone, so the same function serves the
in-process run, the end of a ``-m cv.fold=1,2,3`` sweep (``mammo.sweep.SweepCallback``) and a
re-aggregation after re-running one fold::

    python -m mammo.cv outputs/density_experiments/results_k3_seed42
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from mammo.errors import MammoError

log = logging.getLogger("mammo")
FOLD_RE = re.compile(r"^fold_(\d+)$")
ALIASES = {"kappa": "kappa_quadratic", "auc": "auc_ovr"}  # the spec's second cv_summary shape


def run_all_folds(cfg, cv_dir: Path, link=None) -> float:
    """Train fold 1..K one after another in this process; write the CV artifacts; return the
    mean of the monitored metric over the folds (the objective for sweeps).

    With ``link`` (an HPO trial with a pruner, ``mammo.pruning``) the running mean is reported
    after every fold (step = fold - 1) and the remaining folds are skipped once the pruner says so;
    ``cv_summary.json`` then covers the folds run and says ``"status": "pruned"``.
    """
    import numpy as np
    from hydra.utils import instantiate

    from mammo.distributed import broadcast_from_rank_zero, is_rank_zero
    from mammo.train import run, unwrap_worker_error

    folds = int(cfg.cv.folds)
    log.info("Cross-validation: %d folds, seed %s, in %s", folds, cfg.seed, cv_dir)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    writes = is_rank_zero()  # under DDP only rank zero writes logs and the CV summary
    failed, values = [], []
    for fold in range(1, folds + 1):
        fold_dir = cv_dir / f"fold_{fold}" / "results"
        with fold_log(fold_dir / "run.log" if writes else None):
            try:
                values.append(run(cfg, fold_dir, fold=fold, datamodule=datamodule, cv_dir=cv_dir))
            except Exception as exc:  # a failed fold is recorded; the others still run
                failed.append(fold)
                log.error("Fold %d failed: %s", fold, unwrap_worker_error(exc))
        if link is not None and values:  # the last fold is reported, not judged
            mean = float(np.nanmean(values))
            prune = link.should_prune(mean, fold - 1, ask=fold < folds) if link.trial is not None else False
            if broadcast_from_rank_zero(prune):
                log.info(
                    "Optuna pruned trial %d after fold %d of %d (running CV %s %.4f): skipping the rest",
                    link.number,
                    fold,
                    folds,
                    cfg.monitor,
                    mean,
                )
                break
    if not writes:
        return float("nan")  # the objective is rank zero's
    summary = aggregate(cv_dir, experiment_name=f"density_k{folds}_seed{cfg.seed}", monitor=cfg.monitor)
    if link is not None and link.pruned_at is not None:
        from mammo.artifacts.io import write_json

        summary.update(status="pruned", pruned=link.describe())
        write_json(cv_dir / "cv_summary.json", summary)
    if failed:
        raise MammoError(f"cv: fold(s) {failed} of {folds} failed; see {cv_dir}/cv_summary.json")
    value = summary["objective"]["mean"]
    log.info("CV %s: %.4f ± %.4f over %d folds", cfg.monitor, value, summary["objective"]["std"], folds)
    return value


class fold_log:  # noqa: N801 (used as a context manager)
    """Also write the log to a fold's own run.log, formatted and filtered like Hydra's run.log."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: no fold log (another DDP rank)
        self.handler = None

    def __enter__(self):
        from mammo.artifacts.runlog import RunLogFilter, RunLogFormatter

        if self.path is None:
            return self

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, mode="w", encoding="utf-8")
        self.handler.setFormatter(RunLogFormatter())
        self.handler.addFilter(RunLogFilter())
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.handler is None:
            return
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


def fold_dirs(cv_dir: Path) -> dict[int, Path]:
    """``{k: cv_dir/fold_k/results}`` for the folds present."""
    out = {}
    for child in Path(cv_dir).iterdir() if Path(cv_dir).is_dir() else []:
        match = FOLD_RE.match(child.name)
        if match and (child / "results").is_dir():
            out[int(match.group(1))] = child / "results"
    return dict(sorted(out.items()))


def aggregate(cv_dir: str | Path, experiment_name: str | None = None, monitor: str = "val_kappa") -> dict:
    """Write ``cv_summary.json`` and ``oof_predictions.csv`` from the fold directories.

    Statistics cover the completed folds (``num_folds_aggregated``); failed or missing folds are
    listed in ``fold_details`` with their status. ``std`` is the sample standard deviation
    (``ddof=1``; 0 for a single fold).
    """
    import pandas as pd

    from mammo.artifacts.io import write_csv, write_json
    from mammo.metrics import SHORT_NAMES, density_metrics

    cv_dir = Path(cv_dir)
    dirs = fold_dirs(cv_dir)
    if not dirs:
        raise MammoError(f"{cv_dir}: no fold_<k>/results directories to aggregate")
    summaries = {k: _read_summary(d) for k, d in dirs.items()}
    declared = [s.get("data_config", {}).get("cv_folds") for s in summaries.values() if s]
    num_folds = next((int(n) for n in declared if n), max(dirs))
    first = next(s for s in summaries.values() if s)
    details, values = [], {name: [] for name in SHORT_NAMES}
    completed = []
    for k in range(1, num_folds + 1):
        s = summaries.get(k)
        detail = {
            "fold": k,
            "status": s["status"] if s else "missing",
            "summary_path": f"fold_{k}/results/summary.json",
        }
        if s:
            data = s.get("data_config", {})
            detail.update(
                best_epoch=s.get("best_epoch"),
                train_samples=data.get("num_train"),
                val_samples=data.get("num_val"),
                error=s.get("error"),
            )
        if s and s["status"] == "completed":
            completed.append(k)
            for name, short in SHORT_NAMES.items():
                value = s.get(f"best_val_{short}")
                detail[name] = value
                values[name].append(value)
            detail["kappa"], detail["auc"] = detail["kappa_quadratic"], detail["auc_ovr"]
            detail["objective"] = s.get(f"best_{monitor}")
        details.append(detail)
    stats = {name: _stats(v, completed) for name, v in values.items()}
    stats.update({alias: stats[name] for alias, name in ALIASES.items()})
    objective = [d["objective"] for d in details if d.get("objective") is not None]

    oof = None
    frames = []
    for k in completed:
        path = dirs[k] / "val_predictions.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(fold=k))
    if frames:
        oof = pd.concat(frames, ignore_index=True)
        duplicated = oof["image_id"].duplicated()
        if duplicated.any():
            raise MammoError(
                f"{cv_dir}: image(s) predicted by two folds: {list(oof['image_id'][duplicated][:5])}"
            )
        write_csv(cv_dir / "oof_predictions.csv", oof, float_format="%.9g")
    cv_summary = {
        "experiment_name": experiment_name or _name(cv_dir),
        "num_folds": num_folds,
        "num_folds_completed": len(completed),
        "num_folds_aggregated": len(completed),
        "failed_folds": [d["fold"] for d in details if d["status"] != "completed"],
        "seed": first.get("seed"),
        "base_seed": first.get("seed"),
        "git_commit": first.get("git_commit"),
        "git_dirty": first.get("git_dirty"),
        "monitor": monitor,
        "objective": {**_stats(objective, completed), "metric": monitor},
        "metrics": stats,
        "aggregated_metrics": stats,
        "fold_details": details,
        "oof_metrics": _oof_metrics(oof, density_metrics) if oof is not None else None,
        "oof_samples": None if oof is None else len(oof),
        "folds_file": "folds.csv" if (cv_dir / "folds.csv").is_file() else None,
    }
    write_json(cv_dir / "cv_summary.json", cv_summary)
    return cv_summary


def _stats(values: list, folds: list[int]) -> dict:
    from mammo.metrics import mean_std

    stats = mean_std(v for v in values if v is not None)
    return {**stats, "folds": list(folds)[: len(stats["values"])]}


def _oof_metrics(oof, density_metrics) -> dict:
    import torch

    probs = torch.tensor(oof.filter(like="prob_class").to_numpy(), dtype=torch.float64)
    labels = sorted(int(c.removeprefix("prob_class")) for c in oof.filter(like="prob_class").columns)
    targets = torch.tensor([labels.index(int(t)) for t in oof["true_label"]])
    return density_metrics(probs, targets)


def _read_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _name(cv_dir: Path) -> str:
    match = re.match(r"^results_k(\d+)_seed(\d+)$", cv_dir.name)
    return f"density_k{match.group(1)}_seed{match.group(2)}" if match else cv_dir.name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-aggregate cv_summary.json from a CV directory's folds.")
    parser.add_argument("cv_dir", type=Path, help="outputs/density_experiments/results_k<K>_seed<S>")
    parser.add_argument("--monitor", default="val_kappa", help="the metric reported as the objective")
    args = parser.parse_args(argv)
    try:
        summary = aggregate(args.cv_dir, monitor=args.monitor)
    except MammoError as exc:
        raise SystemExit(f"error: {exc}") from None
    objective = summary["objective"]
    print(
        f"{args.cv_dir / 'cv_summary.json'}: {summary['num_folds_aggregated']}/{summary['num_folds']} folds, "
        f"{args.monitor} {objective['mean']:.4f} ± {objective['std']:.4f}"
    )


if __name__ == "__main__":
    main()
