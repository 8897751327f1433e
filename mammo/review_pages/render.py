"""The review as one self-contained HTML page: no script, no font or style from the internet."""

from __future__ import annotations

from html import escape

from mammo.evaluation.metrics import TITLES

LETTERS = {1: "A", 2: "B", 3: "C", 4: "D", 5: "5"}
SUBGROUP_METRICS = ("accuracy", "kappa_quadratic", "kappa_linear", "auc_ovr", "dense_accuracy")
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 40px;color:#222}
nav{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd}
nav a{margin-right:16px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.cm td{min-width:48px;text-align:center}.cm .hit{background:#e5f3e5}.cm .miss{background:#fbe4e4}
.cards{display:flex;flex-wrap:wrap;gap:12px}.legend{color:#555;font-size:13px}
figure.card{margin:0;border:1px solid #ddd;padding:6px;max-width:560px}
figure.card img{display:block;max-width:100%}
figcaption{font-size:12px;color:#444}.note{color:#a33}.muted{color:#777}
"""


def density(label) -> str:
    return f"{LETTERS.get(int(label), label)} ({int(label)})"


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: ``sections`` are ``(anchor, heading, body html)``."""
    nav = "".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{b}</section>' for a, h, b in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n"
    )


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{lines}</table>'


def value_ci(value, ci) -> str:
    if value is None:
        return '<span class="muted">n/a</span>'
    if not ci or ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} <span class=muted>[{ci[0]:.3f}, {ci[1]:.3f}]</span>"


def metrics_tables(levels: dict[str, dict]) -> str:
    """One table: a row per metric, a column per level (``levels``: level -> a metrics JSON with
    values and ``confidence_intervals``)."""
    if not levels:
        return '<p class="muted">no metrics file found</p>'
    rows = [
        [
            escape(title),
            *(
                value_ci(m.get(name), (m.get("confidence_intervals") or {}).get(name))
                for m in levels.values()
            ),
        ]
        for name, title in TITLES.items()
        if any(name in m for m in levels.values())
    ]
    noted: dict[str, list[str]] = {}  # note -> the levels it is said of
    for level, m in levels.items():
        if (m.get("bootstrap") or {}).get("note"):
            noted.setdefault(m["bootstrap"]["note"], []).append(level)
    notes = "".join(
        f'<p class="muted">{escape(", ".join(names))} level: no 95 % interval, {escape(note)}</p>'
        for note, names in noted.items()
    )
    return table(["metric", *(f"{level} level [95 % CI]" for level in levels)], rows, "metrics") + notes


def confusion(cells: dict, classes: list[int]) -> str:
    """The confusion matrix; every non-empty cell links to its gallery."""
    rows = []
    for t in classes:
        row = [f"<b>true {density(t)}</b>"]
        for p in classes:
            n = len(cells.get((t, p), ()))
            kind = "hit" if t == p else "miss"
            row.append(f'<a class="{kind}" href="#cell-{t}-{p}">{n}</a>' if n else "0")
        rows.append(row)
    header = ["", *(f"predicted {density(p)}" for p in classes)]
    return table(header, rows, "cm")


def gallery(cell: tuple[int, int], frame, shown: int, cards: dict, classes: list[int]) -> str:
    t, p = cell
    what = "correct" if t == p else "wrong"
    showing = "all shown" if len(frame) <= shown else f"the {shown} most confident shown"
    title = f"True {density(t)}, predicted {density(p)} ({what}): {len(frame)} image(s), {showing}"
    return gallery_of(title, frame.head(shown), cards, classes, f"cell-{t}-{p}")


def gallery_of(title: str, rows, cards: dict, classes: list[int], anchor: str = "") -> str:
    """A titled row of cards (``anchor``: the id a link lands on)."""
    figures = "".join(card(row, cards.get(row["image_id"], {}), classes) for _, row in rows.iterrows())
    where = f' id="{anchor}"' if anchor else ""
    return f'<div{where} class="cell"><h3>{escape(title)}</h3><div class="cards">{figures}</div></div>'


def card(row, made: dict, classes: list[int]) -> str:
    facts = [
        verdict(row, classes),
        " · ".join(
            f"{k} {escape(str(row[k]))}"
            for k in ("PatientID", "AccessionNumber", "laterality", "view", "fold")
            if k in row and str(row[k])
        )
        + (f" · scanner {escape(made['scanner'])}" if made.get("scanner") else ""),
        f'<span class="muted">{escape(str(made.get("path", "")))}</span>',
    ]
    note = made.get("note")
    image = (
        f'<img src="{escape(made["file"])}" alt="{escape(row["image_id"])}: the file with the crop box, '
        f'the model input and its Grad-CAM">'
        if made.get("file")
        else ""
    )
    caption = "<br>".join(facts) + (f'<br><span class="note">{escape(note)}</span>' if note else "")
    figure = f"{image}<figcaption>{caption}</figcaption>"
    return f'<figure class="card" data-image="{escape(row["image_id"])}">{figure}</figure>'


def exams(exams, images, cards: dict, classes: list[int]) -> str:
    """Each wrong exam: its label and prediction, and its images side by side."""
    if exams.empty:
        return '<p class="muted">no exam is predicted wrong</p>'
    out = [LEGEND]
    for _, exam in exams.iterrows():
        p = int(exam["predicted_label"])
        title = (
            f"Exam {exam['AccessionNumber']} (patient {exam['PatientID']}, "
            f"{int(exam['num_images'])} images): "
            f"true {density(exam['true_label'])}, predicted {density(p)} ({exam[f'prob_class{p}']:.2f})"
        )
        mine = images[
            (images["PatientID"] == exam["PatientID"])
            & (images["AccessionNumber"] == exam["AccessionNumber"])
        ]
        figures = "".join(card(row, cards.get(row["image_id"], {}), classes) for _, row in mine.iterrows())
        out.append(f'<div class="exam"><h3>{escape(title)}</h3><div class="cards">{figures}</div></div>')
    return "".join(out)


def verdict(row, classes: list[int]) -> str:
    """The card's first line: true and predicted density and the probabilities (a data review's
    cards have the density alone)."""
    if "predicted_label" not in row:
        return f"density <b>{density(row['true_label'])}</b>"
    probs = " · ".join(f"{LETTERS.get(c, c)} {row[f'prob_class{c}']:.2f}" for c in classes)
    predicted = density(row["predicted_label"])
    return f"true <b>{density(row['true_label'])}</b>, predicted <b>{predicted}</b>; {probs}"


def subgroups_table(entries: list[dict]) -> str:
    if not entries:
        return '<p class="muted">no subgroup columns in this data</p>'
    rows = []
    for e in entries:
        intervals = e.get("confidence_intervals") or {}
        values = [value_ci(e["metrics"].get(m), intervals.get(m)) for m in SUBGROUP_METRICS]
        note = f'<br><span class="muted">{escape(e["note"])}</span>' if e.get("note") else ""
        group = escape(e["group"] or "unknown")
        rows.append([f"{escape(e['subgroup'])} = {group}{note}", e["num_images"], e["num_patients"], *values])
    header = ["subgroup", "images", "patients", *(TITLES[m] for m in SUBGROUP_METRICS)]
    return table(header, rows, "subgroups")


LEGEND = (
    '<p class="legend">Each card: the file as stored (downscaled; the breast crop in red, the chest-wall '
    "edge in yellow) · the model's input, exactly as the model saw it · the Grad-CAM of the predicted "
    "class over the input (red: what drove the prediction).</p>"
)

DATA_LEGEND = (
    '<p class="legend">Each card: the file as stored (downscaled; the breast crop in red, the chest-wall '
    "edge in yellow) · the model's input it becomes, with these preprocessing settings.</p>"
)
