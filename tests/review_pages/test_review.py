"""``python -m mammo.review``: the review page of a run, its known answers and its bad input."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest

from mammo.review import main
from mammo.review_pages.build import build_review
from mammo.review_pages.cards import ranked_cells
from tests.conftest import train_tiny
from tests.review_pages.conftest import PER_CELL


class Page(HTMLParser):
    """What a test reads of the page: images, links, anchors and cards per confusion cell."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images, self.links, self.ids, self.cards = [], [], set(), {}
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" or attrs.get("class") == "exam":
            self._cell = None  # cards after here belong to no confusion cell
        if "id" in attrs:
            self.ids.add(attrs["id"])
            if attrs["id"].startswith("cell-"):
                self._cell = attrs["id"]
                self.cards[self._cell] = 0
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "figure" and self._cell:
            self.cards[self._cell] += 1


def predictions(rows: list[tuple[int, list[float]]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "true_label": [t for t, _ in rows],
            "image_id": [f"img{i}" for i in range(len(rows))],
            **{f"prob_class{c + 1}": [p[c] for _, p in rows] for c in range(4)},
        }
    )
    frame["predicted_label"] = frame.filter(like="prob_class").to_numpy().argmax(1) + 1
    return frame


def test_the_most_confident_error_comes_first_in_its_cell():
    frame = predictions(
        [
            (1, [0.3, 0.5, 0.1, 0.1]),
            (1, [0.05, 0.9, 0.05, 0.0]),  # the most confident A -> B error
            (1, [0.2, 0.7, 0.1, 0.0]),
            (2, [0.1, 0.8, 0.1, 0.0]),
        ]
    )
    cells = ranked_cells(frame)
    assert list(cells[(1, 2)]["image_id"]) == ["img1", "img2", "img0"] and list(
        cells[(2, 2)]["image_id"]
    ) == ["img3"]


def test_the_review_page_is_whole_and_stands_alone(reviewed):
    run, index, gone = reviewed
    text = index.read_text()
    page = Page(text)
    assert page.images and all((index.parent / src).stat().st_size > 0 for src in page.images)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from the internet
    for link in page.links:
        if link.startswith("#"):
            assert link[1:] in page.ids, link  # every anchor lands somewhere
        else:
            assert (index.parent / link).is_file(), link
    assert {"results", "errors", "correct", "subgroups", "data", "training"} <= page.ids
    assert f'data-image="{gone}"' in text and "DICOM not found" in text
    mode = json.loads((run / "summary.json").read_text())["data_config"]["cache_mode"]
    assert mode != "disk" and f"this run used data.cache_mode={mode}; with data.cache_mode=disk" in text


def test_every_confusion_cell_links_to_its_images(reviewed):
    run, index, _ = reviewed
    page = Page(index.read_text())
    frame = pd.read_csv(run / "val_predictions.csv")
    counts = frame.groupby(["true_label", "predicted_label"]).size()
    for (t, p), n in counts.items():
        assert f"#cell-{t}-{p}" in page.links
        shown = 3 if t != p else 1  # per_cell for errors, a quarter of it (at least one) for correct ones
        assert page.cards[f"cell-{t}-{p}"] == min(n, shown)


def test_the_subgroup_table_is_the_runs_subgroup_file(reviewed):
    run, index, _ = reviewed
    stored = json.loads((run / "metrics" / "val_subgroups.json").read_text())["subgroups"]
    text = index.read_text()
    section = text[text.index('id="subgroups"') : text.index('id="data"')]
    for entry in stored:
        group = entry["group"] or "unknown"
        row = section[section.index(f"{entry['subgroup']} = {group}") :].split("</tr>")[0]
        cells = re.findall(r"<td>(.*?)</td>", row)  # after the subgroup's own cell
        assert [int(cells[0]), int(cells[1])] == [entry["num_images"], entry["num_patients"]]
        assert cells[2].startswith(f"{entry['metrics']['accuracy']:.3f}")


def test_duplicated_pixels_under_two_patients_are_reported(reviewed, tmp_path):
    run, _, _ = reviewed
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review", "checkpoints"))
    manifest = json.loads((copy / "data_manifest.json").read_text())
    first, second = (
        manifest["files"][0],
        next(f for f in manifest["files"] if f["PatientID"] != manifest["files"][0]["PatientID"]),
    )
    second["sha256"] = first["sha256"]  # the same file under two patients
    (copy / "data_manifest.json").write_text(json.dumps(manifest))
    text = build_review(copy, per_cell=1).read_text()
    assert "Same pixels under two patients or two labels: 1" in text
    assert (
        first["image_id"] in text.split("Same pixels")[1]
        and second["image_id"] in text.split("Same pixels")[1]
    )


def test_a_folder_that_is_not_a_run_or_has_no_predictions_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path)])
    assert info.value.code == 1
    not_a_run = "not a mammo run, evaluation or CV directory (no summary.json or cv_summary.json)"
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: {not_a_run}"
    (tmp_path / "summary.json").write_text(json.dumps({"experiment_type": "density_classification"}))
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: no predictions (") and "\n" not in err


def test_training_and_evaluate_write_the_review_with_review_true(tmp_path, demo_root):
    from mammo.evaluate import main as evaluate
    from mammo.train import main as train
    from tests.conftest import SMALL_DEMO, TINY, console_of, last_line

    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}", "data.num_workers=0", *SMALL_DEMO]
    code, console = console_of(train, [*TINY, *paths, "epochs=1", "review=true"])
    run = tmp_path / "mammo_tiny_density" / "results_1"
    assert code == 0 and "Review: " in (run / "run.log").read_text()
    # the run's last line: its page, and the same command over three seeds
    given = " ".join([*TINY, *paths, "epochs=1", "review=true"])
    assert last_line(console) == (
        f"Review page: {run / 'review' / 'index.html'} | next: python -m mammo.train -m {given} seed=42,43,44"
        "  (the spread over seeds)"
    )
    code, console = console_of(
        evaluate, [f"ckpt={run / 'best_model.pt'}", "split=val", "review=true", *paths]
    )
    assert code == 0
    folder = tmp_path / "evaluations" / "results_1"
    page = (folder / "review" / "index.html").read_text()
    assert "evaluation" in page and 'id="cell-' in page
    assert last_line(console) == (
        f"Review page: {folder / 'review' / 'index.html'} | next: python -m mammo.review {folder}"
        " --deidentify  (a page to share)"
    )


def test_the_most_confidently_wrong_exam_comes_first_with_its_images(reviewed):
    from mammo.review_pages.build import wrong_exams
    from mammo.review_pages.sources import read_source
    from tests.review_pages.conftest import PER_CELL

    frame = predictions(
        [
            (3, [0.0, 0.1, 0.3, 0.6]),
            (3, [0.0, 0.1, 0.3, 0.6]),
            (1, [0.2, 0.7, 0.1, 0.0]),
            (1, [0.1, 0.8, 0.1, 0.0]),
        ]
    )
    frame["PatientID"], frame["AccessionNumber"], frame["laterality"] = (
        ["P1", "P1", "P2", "P2"],
        ["E1", "E1", "E2", "E2"],
        "L",
    )
    exams = wrong_exams(frame, 5)
    assert list(exams["AccessionNumber"]) == ["E2", "E1"]  # B at 0.75 before D at 0.6

    run, index, _ = reviewed
    expected = wrong_exams(read_source(run).predictions, PER_CELL)
    text = index.read_text()
    section = text[text.index('id="exams"') : text.index('id="correct"')]
    blocks = section.split('<div class="exam">')[1:]
    assert len(blocks) == len(expected)
    for block, (_, exam) in zip(blocks, expected.iterrows()):
        assert f"Exam {exam['AccessionNumber']} " in block and block.count("<figure") == exam["num_images"]


def test_a_cv_job_is_reviewed_from_its_out_of_fold_predictions(tmp_path, demo_root):
    from mammo.train import main as train
    from tests.conftest import SMALL_DEMO, TINY, run_cli

    paths = [f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]
    assert run_cli(train, [*TINY, *SMALL_DEMO, *paths, "epochs=1", "cv=kfold", "cv.folds=2"]) == 0
    (cv_dir,) = (tmp_path / "density_experiments").glob("results_k2_*")
    text = build_review(cv_dir, per_cell=2).read_text()
    oof = pd.read_csv(cv_dir / "oof_predictions.csv")
    assert "cross-validation, out-of-fold (CV)" in text and f"{len(oof)} images of" in text
    page = Page(text)
    assert page.images and all((cv_dir / "review" / src).is_file() for src in page.images)
    fold_of = dict(zip(oof["image_id"], oof["fold"]))
    cards = re.findall(r'data-image="([^"]+)">.*?</figure>', text)
    for image_id, figure in zip(cards, re.findall(r'<figure class="card".*?</figure>', text)):
        assert f"fold {fold_of[image_id]}" in figure  # each image is shown with the fold that held it out


def test_preprocessing_outliers_are_shown_from_what_each_cache_entry_recorded(tmp_path, demo_root):
    from dataclasses import replace

    from mammo.data.cache import DiskCache, stored_facts
    from mammo.data.images import Facts, Preprocessing

    run = train_tiny(tmp_path, demo_root, "epochs=1", "data.cache_mode=disk")
    summary = json.loads((run / "summary.json").read_text())
    settings = {k: v for k, v in summary["data_config"]["preprocessing"].items() if k != "pipeline_version"}
    cache = DiskCache(run.parent / "cache", Preprocessing(**settings))
    assert str(cache.folder) == summary["data_config"]["cache"]["folder"]
    manifest = {f["image_id"]: f for f in json.loads((run / "data_manifest.json").read_text())["files"]}
    picked = pd.read_csv(run / "val_predictions.csv").iloc[:5]
    usual = Facts(crop_share=0.5, input_share=0.6, chest_wall_from="laterality", window="window")
    made = [
        replace(usual, crop_share=0.1),
        replace(usual, crop_share=0.99),
        replace(usual, input_share=0.2),
        replace(usual, chest_wall_from="brightness"),
        replace(usual, window="percentile"),
    ]
    for _, row in pd.read_csv(run / "val_predictions.csv").iterrows():  # as if made so
        entry = cache.entry(row["AccessionNumber"], row["image_id"], manifest[row["image_id"]]["sha256"])
        assert stored_facts(cache.folder, [entry]) != [None]
        k = picked.index[picked["image_id"] == row["image_id"]]
        cache.write(entry, cache.read(entry), made[k[0]] if len(k) else usual)
    text = build_review(run, per_cell=2).read_text()
    section = text[text.index('id="data"') : text.index('id="training"')]
    expected = [
        ("Crops that kept under 25% or 95% or more of the file: 2 of 32<", "the crop kept 10% of the file"),
        ("", "the crop kept 99% of the file"),
        ("Breasts that cover under 33% of the model input: 1 of 32<", "the breast covers 20% of the input"),
        (
            "Chest-wall sides guessed from brightness (no Patient Orientation, no laterality): 1 of 32<",
            "chest wall side guessed from brightness",
        ),
        (
            "Windows from the percentile fallback (no VOI LUT, no Window Center/Width in the file): 1 of 32<",
            "window from the percentile fallback",
        ),
    ]
    for (_, row), (title, note) in zip(picked.iterrows(), expected):
        assert title in section
        assert f'data-image="{row["image_id"]}"' in section and note in section
    assert Page(text).images and all((run / "review" / src).is_file() for src in Page(text).images)
    # with data.window=percentile the percentile window is the choice, not a fallback: no such check
    data = summary["data_config"]
    data["preprocessing"]["window"] = "percentile"
    (run / "summary.json").write_text(json.dumps({**summary, "data_config": data}))
    assert "percentile fallback" not in build_review(run, per_cell=2).read_text()


def test_a_dataset_is_reviewed_before_any_training(tmp_path, demo_root, capsys):
    from tests.conftest import SMALL_DEMO

    overrides = [
        *SMALL_DEMO,
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
        "data.num_workers=0",
    ]
    main(overrides)
    (folder,) = (tmp_path / "mammo_efficientnetb0_density" / "data_reviews").glob("results_*")
    page = folder / "review" / "index.html"
    train = " ".join(["python -m mammo.train", *overrides])
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Review page: {page} | next: {train}  (train on this data)"
    )
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    split = pd.read_csv(folder / "split.csv")
    manifest = json.loads((folder / "data_manifest.json").read_text())
    assert len(split) == manifest["num_images"]
    text = (folder / "review" / "index.html").read_text()
    labels = pd.Series([f["label"] for f in manifest["files"]]).value_counts()
    for label, count in labels.items():
        heading = f"Density {'ABCD'[label - 1]} ({label}): {count} image(s)"
        block = text.split(heading)[1].split("</div></div>")[0]
        assert block.count("<figure") == min(6, count)  # a sample of each class, as the model will see it
    page = Page(text)
    assert page.images and all((folder / "review" / src).is_file() for src in page.images)
    assert "Same pixels under two patients or two labels: 0" in text


def test_card_files_are_one_per_image_id_and_the_same_in_every_run():
    """Ids that differ only in characters a file name cannot hold (a space and a dash, accented
    letters) used to share one card file, so a card could show another image."""
    import subprocess
    import sys

    from mammo.review_pages.cards import card_name

    ids = [f"{patient}/{side}_CC" for patient in ("P 1", "P-1", "Zoé", "Zoè", "P_1", "P  1") for side in "LR"]
    names = [card_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.png", n) for n in names)
    code = f"from mammo.review_pages.cards import card_name; print([card_name(i) for i in {ids!r}])"
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == repr(names)


def test_a_damaged_predictions_file_is_one_line_and_a_cut_one_is_said(reviewed, tmp_path, capsys, caplog):
    """A line cut in the middle gave a traceback; a file cut at a line end was reviewed as a
    subset (17 of the split's 20 images) without a word."""
    run = tmp_path / "run"
    shutil.copytree(reviewed[0], run, ignore=shutil.ignore_patterns("review"))
    predictions = run / "val_predictions.csv"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 3])  # cut mid-line
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(run)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: {predictions}: line {len(lines)}: ") and "not a number" in err

    predictions.write_text("".join(lines[:-3]))  # cut at a line end: 3 images fewer
    total = len(lines) - 1
    with caplog.at_level("WARNING", logger="mammo"):
        main([str(run)])
    said = f"the predictions file holds {total - 3} of the val split's {total} images"
    assert [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert said in (run / "review" / "index.html").read_text()


def test_a_deidentified_page_holds_no_id_and_no_path_and_its_pseudonyms_are_stable(
    reviewed, tmp_path, monkeypatch
):
    """The page showed PatientID and the absolute DICOM path on every card."""
    import stat

    run = tmp_path / "run"
    shutil.copytree(reviewed[0], run, ignore=shutil.ignore_patterns("review"))
    monkeypatch.delenv("MAMMO_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    predictions = pd.read_csv(run / "val_predictions.csv", dtype=str)
    manifest = json.loads((run / "data_manifest.json").read_text())
    root = json.loads((run / "summary.json").read_text())["data_config"]["dicom_root"]

    plain = build_review(run, per_cell=PER_CELL).read_text()
    assert root not in plain and any(f["path"] in plain for f in manifest["files"])  # below the data root

    page = build_review(run, per_cell=PER_CELL, deidentify=True)
    text = page.read_text()
    ids = {
        *predictions["image_id"],
        *predictions["AccessionNumber"],
        *(f["PatientID"] for f in manifest["files"]),
    }
    folders = {f["path"].split("/")[0] for f in manifest["files"]}
    assert [i for i in ids | folders if i in text] == [] and root not in text
    assert (
        "De-identified" in text and re.search(r"P-[0-9a-f]{10}", text) and re.search(r"E-[0-9a-f]{10}", text)
    )
    cards = sorted(p.name for p in (page.parent / "cards").iterdir())
    assert cards and all(re.fullmatch(r"I-[0-9a-f]{10}\.[0-9a-f]{10}\.png", c) for c in cards)
    key = tmp_path / "cache" / "mammo" / "pseudonym.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() not in text
    assert build_review(run, per_cell=PER_CELL, deidentify=True).read_text() == text  # the same pseudonyms


def test_patients_per_class_count_each_patient_with_an_image_of_that_class(tmp_path):
    """Per-image PatientIDs (``P_00173_LEFT_CC``) shared by exams of two densities: a patient
    counts under every class it has an image of on that side, never 0 under images."""
    from types import SimpleNamespace

    from mammo.review_pages.data_checks import class_distribution

    rows = [  # image, exam, patient id (per image and view, as on many de-identified exports), label
        ("A1/L_CC", "A1", "P_00173_LEFT_CC", 3),
        ("A1/L_MLO", "A1", "P_00173_LEFT_MLO", 3),
        ("A2/L_CC", "A2", "P_00173_LEFT_CC", 4),
        ("A2/L_MLO", "A2", "P_00173_LEFT_MLO", 4),
        ("A3/L_CC", "A3", "P_00200_LEFT_CC", 1),
        ("A4/L_CC", "A4", "P_00300_LEFT_CC", 2),
    ]
    files = pd.DataFrame(rows, columns=["image_id", "AccessionNumber", "PatientID", "label"])
    split = files.assign(split="val")[["image_id", "AccessionNumber", "PatientID", "split"]]
    split.loc[files["label"] <= 2, "split"] = "train"
    split.to_csv(tmp_path / "split.csv", index=False)
    html = class_distribution(SimpleNamespace(folder=tmp_path), files)
    cells = re.findall(r"<td>(.*?)</td>", html)
    val = cells[cells.index("val") + 1 : cells.index("val") + 5]
    assert val == [
        "0 <span class=muted>(0 p.)</span>",
        "0 <span class=muted>(0 p.)</span>",
        "2 <span class=muted>(2 p.)</span>",
        "2 <span class=muted>(2 p.)</span>",
    ]


def test_exams_whose_images_carry_several_patient_ids_are_listed(reviewed, tmp_path):
    run, _, _ = reviewed
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review", "checkpoints"))
    manifest = json.loads((copy / "data_manifest.json").read_text())
    assert manifest["patient_ids"]["setting"] == "auto"  # recorded by training
    assert (
        "Exams whose images carry several patient ids (data.patient_id=auto): 0"
        in build_review(copy, per_cell=1).read_text()
    )
    manifest["exams_with_several_patients"] = [
        {
            "AccessionNumber": "ACC9",
            "patients": ["P_9_LEFT_CC", "P_9_LEFT_MLO"],
            "images": ["ACC9/L_CC", "ACC9/L_MLO"],
            "from": ["header PatientID"],
        }
    ]
    (copy / "data_manifest.json").write_text(json.dumps(manifest))
    text = build_review(copy, per_cell=1).read_text()
    section = text.split("Exams whose images carry several patient ids (data.patient_id=auto): 1")[1]
    assert "<td>ACC9</td><td>P_9_LEFT_CC, P_9_LEFT_MLO</td><td>header PatientID</td>" in section
