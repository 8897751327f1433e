"""Is A better than B? Two runs' or evaluations' predictions on the images both predicted.

Per metric and level (image; breast and exam where the data has them): A, B, the difference
A - B with a **paired** patient-bootstrap 95 % interval (each resample draws the same patients
for both, so what the patients share cancels out), and McNemar's exact test on per-image
correctness (the images only one of them gets right). The same paired comparison is made per
subgroup (scanner, view, laterality, the label file's subgroup columns), with no interval for a
subgroup of fewer than :data:`~mammo.evaluation.intervals.MIN_PATIENTS` patients.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from mammo.artifacts.files import prediction_arrays, read_predictions
from mammo.artifacts.io import atomic_write_text, write_json
from mammo.core.errors import DataError
from mammo.data.scan import manifest_changes
from mammo.evaluation.bootstrap import resampled_metrics, weighted_metrics
from mammo.evaluation.intervals import too_few_patients
from mammo.evaluation.levels import available_levels, unit_predictions
from mammo.evaluation.metrics import TITLES
from mammo.evaluation.subgroups import manifest_subgroups, subgroup_rows

log = logging.getLogger("mammo")
SUBGROUP_SHOWN = ("kappa_quadratic", "accuracy")
"""The metrics of the per-subgroup table in comparison.md."""
PREDICTION_FILES = {"test": "test_predictions.csv", "val": "val_predictions.csv", "eval": "predictions.csv"}


def predictions_of(folder: Path, split: str = "auto") -> tuple[str, pd.DataFrame, dict]:
    """The image predictions of a training run (``test`` when it has a test split, else ``val``)
    or of an evaluation (``eval``), with ``PatientID`` from the folder's ``data_manifest.json``,
    and that manifest."""
    folder = Path(folder)
    order = list(PREDICTION_FILES) if split == "auto" else [split]
    name = next((s for s in order if (folder / PREDICTION_FILES[s]).is_file()), None)
    if name is None:
        wanted = ", ".join(PREDICTION_FILES[s] for s in order)
        raise DataError(f"{folder}: no predictions ({wanted} not found)")
    frame = read_predictions(folder / PREDICTION_FILES[name])
    manifest = folder / "data_manifest.json"
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found (needed for the patients of the images)")
    data = json.loads(manifest.read_text())
    patient_of = {f["image_id"]: str(f["PatientID"]) for f in data["files"]}
    frame["PatientID"] = frame["image_id"].map(patient_of).fillna(frame["AccessionNumber"])
    return name, frame, data


def data_of_both(manifests: tuple[dict, dict], names: tuple[str, str]) -> dict:
    """Whether A and B were run on the same data (their ``data_manifest.json``): an image_id that
    names different files in the two is an error (their predictions are not of the same image);
    other differences (images only one of them has) are returned, to be said with the result."""
    shared = {f["image_id"]: f.get("sha256") for f in manifests[0]["files"]}
    other = [
        f["image_id"]
        for f in manifests[1]["files"]
        if shared.get(f["image_id"], f.get("sha256")) != f.get("sha256")
    ]
    if other:
        raise DataError(
            f"{len(other)} image_id(s) are different files in {names[0]} and {names[1]}, e.g. {other[0]}: "
            "they were run on different data, so their predictions are not of the same images"
        )
    differences = manifest_changes(*manifests)
    if not differences:
        return {"same": True}
    return {"same": False, "b_against_a": differences}


def paired(
    a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str], adjudicated: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A's and B's rows of the images both predicted, in one order; an error when they share
    none, or when their classes or labels differ. Labels that differ because the readers changed
    them (``adjudicated``: image_id -> the readers' density, :func:`adjudicated_labels`) are the
    readers' on both sides: both models are judged against the adjudicated labels."""
    shared = sorted(set(a["image_id"]) & set(b["image_id"]))
    if not shared:
        raise DataError(f"{names[0]} and {names[1]} share no image_id: nothing to compare")
    a, b = (f.set_index("image_id").loc[shared].reset_index() for f in (a, b))
    if list(a.filter(like="prob_class").columns) != list(b.filter(like="prob_class").columns):
        raise DataError(f"{names[0]} and {names[1]} predict different classes")
    differ = a["true_label"].astype(int).to_numpy() != b["true_label"].astype(int).to_numpy()
    explained = a["image_id"].isin(list(adjudicated or {})).to_numpy()
    if (differ & ~explained).any():
        first = a["image_id"][differ & ~explained].iloc[0]
        raise DataError(f"{int(differ.sum())} shared image(s) have different labels in A and B, e.g. {first}")
    if differ.any():
        readers = a["image_id"].map(adjudicated).where(differ)
        a, b = (f.assign(true_label=readers.fillna(f["true_label"]).astype(int)) for f in (a, b))
    return a, b


def readers_note(adjudicated: dict, compared: pd.DataFrame) -> str:
    """What the comparison's labels are, where readers changed some."""
    changed = int(compared["image_id"].isin(list(adjudicated)).sum())
    return (
        f"the readers' labels (data.readings) for {changed} compared image(s), the label file's for the rest"
    )


def adjudicated_labels(*manifests: dict) -> dict[str, int]:
    """The labels the readers changed (``data_manifest.json`` → ``readings.relabelled`` of a run
    trained with ``data.readings``), image_id -> new label; B's over A's."""
    found = {}
    for manifest in manifests:
        for change in (manifest.get("readings") or {}).get("relabelled", []):
            found[str(change["image_id"])] = int(change["new_label"])
    return found


def mcnemar(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """McNemar's exact test (two-sided binomial on the discordant images)."""
    right_a = a["predicted_label"].astype(int).to_numpy() == a["true_label"].astype(int).to_numpy()
    right_b = b["predicted_label"].astype(int).to_numpy() == b["true_label"].astype(int).to_numpy()
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "both_correct": int((right_a & right_b).sum()),
        "p_value": float(p),
    }


def compare_level(a: pd.DataFrame, b: pd.DataFrame, resamples: int, seed: int) -> dict:
    """Per metric: A, B, A - B and the paired interval of the difference."""
    (probs_a, targets), (probs_b, _) = prediction_arrays(a), prediction_arrays(b)
    probs = [probs_a, probs_b]
    patients = a["PatientID"].to_numpy()
    ones = np.ones((1, len(targets)))
    values = [weighted_metrics(p, targets, ones) for p in probs]
    draws = [resampled_metrics(p, targets, patients, resamples, seed) for p in probs] if resamples else None
    out = {}
    for name, title in TITLES.items():
        if name not in values[0]:
            continue
        va, vb = float(values[0][name][0]), float(values[1][name][0])
        entry = {"title": title, "a": va, "b": vb, "difference": va - vb, "ci": [None, None]}
        if draws is not None:
            difference = draws[0][name] - draws[1][name]
            finite = difference[np.isfinite(difference)]
            if finite.size:
                entry["ci"] = [float(v) for v in np.percentile(finite, [2.5, 97.5])]
        out[name] = entry
    return out


def compare(
    folder_a: Path, folder_b: Path, out: Path, split: str, resamples: int, seed: int, aggregate: str
) -> dict:
    """Write ``comparison.json`` and ``comparison.md`` into ``out``; returns the comparison."""
    result = comparison(folder_a, folder_b, split, resamples, seed, aggregate)
    write_comparison(result, out)
    return result


def write_comparison(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "comparison.json", result)
    atomic_write_text(out / "comparison.md", comparison_table(result))


def comparison(folder_a: Path, folder_b: Path, split: str, resamples: int, seed: int, aggregate: str) -> dict:
    """A against B (see the module docstring), nothing written."""
    (name_a, a, manifest_a), (name_b, b, manifest_b) = (
        predictions_of(f, split) for f in (folder_a, folder_b)
    )
    names = (str(folder_a), str(folder_b))
    data = data_of_both((manifest_a, manifest_b), names)
    adjudicated = adjudicated_labels(manifest_a, manifest_b)
    a, b = paired(a, b, names, adjudicated)
    levels = {"image": compare_level(a, b, resamples, seed)}
    for level in available_levels(a, "compare"):
        units = [unit_predictions(f, level, aggregate)[0] for f in (a, b)]
        if len(units[0]):  # else every unit's images disagree on the label
            levels[level] = compare_level(*units, resamples, seed)
    subgroups = compare_subgroups(*manifest_subgroups(a, manifest_a), b, resamples, seed)
    result = {
        "a": {"path": str(folder_a), "predictions": PREDICTION_FILES[name_a]},
        "b": {"path": str(folder_b), "predictions": PREDICTION_FILES[name_b]},
        "data": data,
        **({"labels": readers_note(adjudicated, a)} if adjudicated else {}),
        "num_images": len(a),
        "num_patients": int(a["PatientID"].nunique()),
        "bootstrap": {"resamples": resamples, "unit": "patient", "paired": True, "level": 0.95, "seed": seed},
        "levels": levels,
        "mcnemar": mcnemar(a, b),
        "subgroups": subgroups,
    }
    return result


def compare_subgroups(
    a: pd.DataFrame, columns: tuple[str, ...], b: pd.DataFrame, resamples: int, seed: int
) -> list:
    """Per subgroup of A's images (``columns`` of ``a``; B's rows are the same images in the same
    order): ``subgroup``, ``group``, ``num_images``, ``num_patients`` and each metric's A, B,
    A - B and paired interval (none, with a ``note``, below ``MIN_PATIENTS`` patients)."""
    out = []
    for column, group, rows in subgroup_rows(a, columns):
        patients = int(a.loc[rows, "PatientID"].nunique())
        note = too_few_patients(patients)
        entry = {
            "subgroup": column,
            "group": group,
            "num_images": int(rows.sum()),
            "num_patients": patients,
            "metrics": compare_level(a[rows], b[rows], 0 if note else resamples, seed),
        }
        if note:
            entry["note"] = note
        out.append(entry)
    return out


def comparison_table(result: dict) -> str:
    """The comparison as a Markdown table (also what the entry prints)."""
    lines = [
        f"A: {result['a']['path']} ({result['a']['predictions']})",
        f"B: {result['b']['path']} ({result['b']['predictions']})",
        f"{result['num_images']} shared images of {result['num_patients']} patients; "
        f"95 % CI of A - B from {result['bootstrap']['resamples']} paired patient-bootstrap resamples",
        *(
            []
            if result["data"]["same"]
            else [f"WARNING: different data: B has, against A, {result['data']['b_against_a']}"]
        ),
        *([f"Labels: {result['labels']}"] if result.get("labels") else []),
        "",
        "| level | metric | A | B | A - B | 95 % CI |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level, metrics in result["levels"].items():
        for entry in metrics.values():
            low, high = entry["ci"]
            ci = "" if low is None else f"[{low:+.4f}, {high:+.4f}]"
            values = f"{entry['a']:.4f} | {entry['b']:.4f} | {entry['difference']:+.4f}"
            lines.append(f"| {level} | {entry['title']} | {values} | {ci} |")
    test = result["mcnemar"]
    lines += [
        "",
        f"McNemar (images): A right and B wrong {test['only_a_correct']}, B right and A wrong "
        f"{test['only_b_correct']}, exact two-sided p = {test['p_value']:.4g}",
    ]
    return "\n".join(lines + subgroup_lines(result.get("subgroups") or [])) + "\n"


def subgroup_lines(entries: list[dict]) -> list[str]:
    """The per-subgroup comparison's table (images; every metric is in comparison.json)."""
    if not entries:
        return []
    lines = [
        "",
        f"Per subgroup (images; {', '.join(TITLES[m] for m in SUBGROUP_SHOWN)} here, "
        "every metric in comparison.json)",
        "",
        "| subgroup | images | patients | metric | A | B | A - B | 95 % CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        name = f"{e['subgroup']}={e['group'] or 'unknown'}"
        for metric in SUBGROUP_SHOWN:
            m = e["metrics"].get(metric)
            if m is None:
                continue
            low, high = m["ci"]
            ci = e.get("note", "") if low is None else f"[{low:+.4f}, {high:+.4f}]"
            values = f"{m['a']:.4f} | {m['b']:.4f} | {m['difference']:+.4f}"
            lines.append(
                f"| {name} | {e['num_images']} | {e['num_patients']} | {m['title']} | {values} | {ci} |"
            )
    return lines
