"""The runs below a folder, one row each from its ``summary.json``, and the comparison of two
(``python -m mammo.runs`` prints them)."""

from __future__ import annotations

import json
from pathlib import Path

from mammo.artifacts.summary import process_gone

COLUMNS = ("run", "type", "seed", "fold", "trial", "arch", "lr", "status", "metric", "best", "seconds", "git")


def find_runs(root: Path) -> list[dict]:
    """One row per ``summary.json`` below ``root`` (sorted by path). A run whose summary says
    ``running`` but whose process is gone shows ``dead`` (``mammo.artifacts.summary.process_gone``)."""
    rows = []
    for path in sorted(Path(root).rglob("summary.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "experiment_type" not in s:
            continue
        hp, integration = s.get("hyperparameters", {}), s.get("integration", {}) or {}
        best = s.get("best_metric") or {}
        if not best and "metrics" in s:  # evaluations report their metrics directly
            best = {"name": "kappa_quadratic", "value": s["metrics"].get("kappa_quadratic")}
        rows.append(
            {
                "run": str(path.parent.relative_to(root)) if path.parent != Path(root) else ".",
                "type": s["experiment_type"],
                "seed": s.get("seed"),
                "fold": integration.get("cv_fold"),
                "trial": integration.get("optuna_trial_id"),
                "arch": hp.get("arch") or (s.get("model_config") or {}).get("arch"),
                "lr": hp.get("learning_rate"),
                "status": "dead" if process_gone(s) else s.get("status"),
                "metric": best.get("name"),
                "best": best.get("value"),
                "seconds": (s.get("execution") or {}).get("duration_seconds"),
                "git": s.get("git_commit"),
                "path": str(path.parent),
            }
        )
    return rows


def select(rows: list[dict], filters: list[str], sort: str | None, descending: bool) -> list[dict]:
    """Keep rows whose ``key=value`` filters all match (as text); sort by a column (None last)."""
    for item in filters:
        key, _, value = item.partition("=")
        if key not in COLUMNS:
            raise SystemExit(f"--filter {item}: unknown column {key!r} (columns: {', '.join(COLUMNS)})")
        rows = [r for r in rows if str(r.get(key)) == value]
    if sort:
        if sort not in COLUMNS:
            raise SystemExit(f"--sort {sort}: unknown column (columns: {', '.join(COLUMNS)})")
        present = sorted(
            (r for r in rows if r.get(sort) is not None), key=lambda r: r[sort], reverse=descending
        )
        rows = present + [r for r in rows if r.get(sort) is None]
    return rows


def format_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    table = [list(COLUMNS)] + [[cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table)


def compare(a: Path, b: Path) -> str:
    """The hyperparameters, data and best metrics that differ between two runs' summary.json."""
    sa, sb = (json.loads((Path(p) / "summary.json").read_text()) for p in (a, b))
    flat_a, flat_b = _flatten(_comparable(sa)), _flatten(_comparable(sb))
    lines = [f"{'key':40s}  {Path(a).name:>18s}  {Path(b).name:>18s}"]
    for key in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(key, "-"), flat_b.get(key, "-")
        if va != vb:
            lines.append(f"{key:40s}  {_short(va):>18s}  {_short(vb):>18s}")
    return "\n".join(lines) if len(lines) > 1 else "no differences in hyperparameters, data or metrics"


def _comparable(summary: dict) -> dict:
    keep = {k: v for k, v in summary.items() if k.startswith("best_")}
    keep.update(
        seed=summary.get("seed"),
        status=summary.get("status"),
        git_commit=summary.get("git_commit"),
        hyperparameters=summary.get("hyperparameters", {}),
        data_config={
            k: v for k, v in (summary.get("data_config") or {}).items() if not isinstance(v, dict | list)
        },
    )
    return keep


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)[:18]
