"""The report pack: figures and tables for a paper from finished runs (``python -m mammo.report``).

    python -m mammo.report 'runs=[outputs/mammo_tiny_density/results_1,outputs/mammo_tiny_density/results_2]'

Reads only ``summary.json``, ``val_predictions.csv``, ``train_history.json`` (and
``plots/gradcam_samples.png`` when the run has one) of each run; a CV directory stands for its
folds. Writes ``outputs/report_pack/results_N/``: ``density_train_seed{S}.png``,
``density_confusion_seed{S}.png``, ``density_gradcam_seed{S}.png`` per run (``_fold{k}`` added for
CV folds), ``metrics_table.tex`` and ``metrics_table.md`` (each run's best-epoch accuracy, balanced
accuracy, quadratic kappa, macro-F1, AUC and their mean ± std, ``ddof=1``),
``subgroups_table.{md,tex}`` (the same metrics per subgroup, from each run's
``metrics/val_subgroups.json``, when every run has one) and ``report.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import torch

from mammo.artifacts.io import atomic_write_text, write_json
from mammo.artifacts.plots import plot_confusion, plot_train_curves
from mammo.artifacts.rundir import fold_dirs
from mammo.core.errors import ConfigError
from mammo.evaluation.intervals import MIN_PATIENTS
from mammo.evaluation.metrics import SHORT_NAMES, TITLES, confusion_matrix, mean_std

log = logging.getLogger("mammo")
REPORTED = ("accuracy", "balanced_accuracy", "kappa_quadratic", "macro_f1", "auc_ovr")
"""The metrics of the tables, in order (``mammo.evaluation.metrics`` names and titles them)."""
OPTIONAL = ("kappa_linear",)
LEVEL_NAMES = ("image", "breast", "exam")
"""Reported too when every run has them (runs from before they existed do not)."""


def expand(paths: list[Path]) -> list[tuple[str, Path, dict]]:
    """(label, run dir, summary) per run; a CV directory gives its completed folds."""
    runs = []
    for path in paths:
        if (path / "cv_summary.json").is_file():
            for k, fold in fold_dirs(path).items():
                summary = _summary(fold)
                if summary["status"] == "completed":
                    runs.append((f"seed{summary['seed']}_fold{k}", fold, summary))
            continue
        summary = _summary(path)
        if summary.get("status") != "completed":
            raise ConfigError(f"runs: {path} has status {summary.get('status')!r}, not completed")
        runs.append((f"seed{summary['seed']}", path, summary))
    labels = [label for label, _, _ in runs]
    return [
        (label if labels.count(label) == 1 else f"{label}_{path.name}", path, summary)
        for label, path, summary in runs
    ]


def report_pack(paths: list[Path], out: Path, level: str = "image") -> dict:
    """Write the figures and tables for ``paths`` into ``out``, the tables at ``level`` (image,
    breast or exam); returns what report.json holds."""
    if level not in LEVEL_NAMES:
        raise ConfigError(f"level={level!r}: expected one of {', '.join(LEVEL_NAMES)}")
    runs = expand(paths)
    if not runs:
        raise ConfigError("runs: no completed run found")
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for label, path, summary in runs:
        history = json.loads((path / "train_history.json").read_text())
        rows = [dict(zip(history, values)) for values in zip(*history.values())]
        plot_train_curves(rows, out / f"density_train_{label}.png")
        classes, confusion = predictions_confusion(path / "val_predictions.csv")
        title = f"{label}: best epoch {summary.get('best_epoch')}"
        plot_confusion(confusion, classes, out / f"density_confusion_{label}.png", title=title)
        made = [f"density_train_{label}.png", f"density_confusion_{label}.png"]
        gradcam = path / "plots" / "gradcam_samples.png"
        if gradcam.is_file():
            shutil.copyfile(gradcam, out / f"density_gradcam_{label}.png")
            made.append(f"density_gradcam_{label}.png")
        else:
            log.warning("%s has no plots/gradcam_samples.png (run mammo.evaluate on its checkpoint)", path)
        figures.append({"label": label, "run_dir": str(path), "figures": made})
    table = metrics_table(runs) if level == "image" else level_table(runs, level)
    atomic_write_text(out / "metrics_table.md", markdown_table(table))
    atomic_write_text(out / "metrics_table.tex", latex_table(table))
    report = {"runs": figures, "metrics": table}
    subgroups = subgroup_tables(runs)
    if subgroups:
        write_subgroup_tables(subgroups, out)
        report["subgroups"] = subgroups
    write_json(out / "report.json", report)
    log.info("Report pack for %d run(s): %s", len(runs), out)
    return report


def metrics_table(runs: list[tuple[str, Path, dict]]) -> dict:
    """Per metric: each run's best-epoch value and 95 % interval (``None`` for runs from before
    intervals), and mean and std (ddof=1) across runs. Linear kappa joins the spec's metrics
    when every run has it."""
    table = {"runs": [label for label, _, _ in runs], "metrics": {}}
    names = [*REPORTED, *(n for n in OPTIONAL if all(f"best_val_{SHORT_NAMES[n]}" in s for _, _, s in runs))]
    for name in names:
        key = f"best_val_{SHORT_NAMES[name]}"
        values = [summary[key] for _, _, summary in runs]
        intervals = [summary.get("confidence_intervals", {}).get(key) for _, _, summary in runs]
        table["metrics"][name] = {"title": TITLES[name], **mean_std(values), "intervals": intervals}
    table["notes"] = interval_notes(runs, [summary.get("bootstrap") for _, _, summary in runs])
    return table


def interval_notes(runs: list[tuple[str, Path, dict]], bootstraps: list[dict | None]) -> dict[str, str]:
    """Per run without intervals on too few patients, the note its metrics file holds."""
    return {label: b["note"] for (label, _, _), b in zip(runs, bootstraps) if b and b.get("note")}


def level_table(runs: list[tuple[str, Path, dict]], level: str) -> dict:
    """:func:`metrics_table` at breast or exam level, from each run's
    ``metrics/val_<level>_metrics.json`` (the best epoch's units)."""
    stored = []
    for _, path, _ in runs:
        file = path / "metrics" / f"val_{level}_metrics.json"
        if not file.is_file():
            raise ConfigError(
                f"level={level}: {file} not found (a run from before breast/exam levels, or data "
                "without laterality / exam ids)"
            )
        stored.append(json.loads(file.read_text()))
    table = {"runs": [label for label, _, _ in runs], "level": level, "metrics": {}}
    for name in (*REPORTED, *OPTIONAL):
        intervals = [m.get("confidence_intervals", {}).get(name) for m in stored]
        values = [m[name] for m in stored]
        title = f"{TITLES[name]} ({level})"
        table["metrics"][name] = {"title": title, **mean_std(values), "intervals": intervals}
    table["notes"] = interval_notes(runs, [m.get("bootstrap") for m in stored])
    return table


def subgroup_tables(runs: list[tuple[str, Path, dict]]) -> dict | None:
    """Per reported metric, a table whose rows are the subgroups (``metrics/val_subgroups.json``
    of each run: scanner, view, laterality, the label file's columns): each run's value and
    interval (``None`` where a run lacks the subgroup or the value), and mean ± std across the
    runs that have it. ``None`` (and a log line) when a run has no subgroup file."""
    stored = []
    for _, path, _ in runs:
        file = path / "metrics" / "val_subgroups.json"
        if not file.is_file():
            log.info(
                "%s has no metrics/val_subgroups.json (a run from before subgroups): no subgroup tables", path
            )
            return None
        stored.append({(e["subgroup"], e["group"]): e for e in json.loads(file.read_text())["subgroups"]})
    keys = list(dict.fromkeys(key for entries in stored for key in entries))
    tables = {}
    for name in REPORTED:
        rows = {}
        for column, group in keys:
            entries = [entries.get((column, group)) for entries in stored]
            values = [(e or {}).get("metrics", {}).get(name) for e in entries]
            intervals = [((e or {}).get("confidence_intervals") or {}).get(name) for e in entries]
            sizes = [
                f"{span([e[k] for e in entries if e])} {k.removeprefix('num_')}"
                for k in ("num_images", "num_patients")
            ]
            rows[f"{column}={group}"] = {
                "title": f"{column}={group or 'unknown'} ({', '.join(sizes)})",
                **mean_std(v for v in values if v is not None),
                "values": values,
                "intervals": intervals,
            }
        tables[name] = {"runs": [label for label, _, _ in runs], "title": TITLES[name], "metrics": rows}
    return tables


def span(numbers: list[int]) -> str:
    """``16`` or ``12-16``: a count that may differ between runs (CV folds)."""
    low, high = min(numbers), max(numbers)
    return str(low) if low == high else f"{low}-{high}"


def write_subgroup_tables(tables: dict, out: Path) -> None:
    """``subgroups_table.md`` and ``.tex``: a table per metric, a row per subgroup."""
    intro = (
        "Per subgroup of the validation images: each run's value [95 % patient-bootstrap interval; "
        f"none under {MIN_PATIENTS} patients]; - where a run's split has no such image.\n\n"
    )
    markdown = [intro] + [f"## {t['title']}\n\n" + markdown_table(t, "Subgroup") for t in tables.values()]
    latex = [f"% {t['title']}\n" + latex_table(t, "Subgroup") for t in tables.values()]
    atomic_write_text(out / "subgroups_table.md", "\n".join(markdown))
    atomic_write_text(out / "subgroups_table.tex", "\n".join(latex))


def _cell(value: float | None, interval) -> str:
    """``0.712 [0.650, 0.770]``, the value alone without an interval, ``-`` without a value."""
    if value is None:
        return "-"
    if not interval or None in interval:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def predictions_confusion(path: Path) -> tuple[list[int], list[list[int]]]:
    """The class labels and confusion matrix of a ``val_predictions.csv``."""
    preds = pd.read_csv(path)
    columns = list(preds.filter(like="prob_class").columns)
    classes = [int(c.removeprefix("prob_class")) for c in columns]
    targets = torch.tensor([classes.index(int(t)) for t in preds["true_label"]])
    return classes, confusion_matrix(torch.tensor(preds[columns].to_numpy()), targets)


def _mean_std(m: dict, plus_minus: str) -> str:
    return "-" if m["mean"] is None else f"{m['mean']:.3f} {plus_minus} {m['std']:.3f}"


def markdown_table(table: dict, first: str = "Metric") -> str:
    head = [first, *table["runs"], "Mean ± std"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in table["metrics"].values():
        cells = [_cell(v, ci) for v, ci in zip(m["values"], m["intervals"])]
        cells.append(_mean_std(m, "±"))
        lines.append(f"| {m['title']} | " + " | ".join(cells) + " |")
    lines += [f"\nNo 95 % interval for {run}: {note}." for run, note in table.get("notes", {}).items()]
    return "\n".join(lines) + "\n"


def latex_table(table: dict, first: str = "Metric") -> str:
    """A booktabs table (needs \\usepackage{booktabs} in the paper)."""
    runs = [r.replace("_", "\\_") for r in table["runs"]]
    lines = [
        "\\begin{tabular}{l" + "r" * (len(runs) + 1) + "}",
        "\\toprule",
        f"{first} & " + " & ".join(runs) + " & Mean $\\pm$ std \\\\",
        "\\midrule",
    ]
    for m in table["metrics"].values():
        cells = [_cell(v, ci) for v, ci in zip(m["values"], m["intervals"])]
        cells.append(_mean_std(m, "$\\pm$"))
        title = m["title"].replace("_", "\\_")
        lines.append(f"{title} & " + " & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    for run, note in table.get("notes", {}).items():
        text = f"No 95 \\% interval for {run}: {note}.".replace("_", "\\_")
        lines.append(f"\\multicolumn{{{len(runs) + 2}}}{{l}}{{\\footnotesize {text}}} \\\\")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


def _summary(path: Path) -> dict:
    file = path / "summary.json"
    if not file.is_file():
        raise ConfigError(f"runs: {file} not found")
    return json.loads(file.read_text())
