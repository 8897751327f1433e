"""The app, served for real on loopback and driven through its HTTP API (gradio_client) as a
script would, and in headless Chromium as a person would."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from mammo.readings.store import read_readings, reader_file
from tests.conftest import SMALL_DEMO, TINY, console_of, last_line, run_cli
from tests.servers import AppServer

pytest.importorskip("gradio_client", reason="the app's tests need the app extra: pip install -e '.[app]'")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_root) -> Path:
    from mammo.train import main

    out = tmp_path_factory.mktemp("app_run")
    args = [*TINY, *SMALL_DEMO, "epochs=2", f"paths.output_dir={out}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, args) == 0
    return out / "mammo_tiny_density" / "results_1"


@pytest.fixture(scope="module")
def exam(demo_root) -> list[Path]:
    return sorted(next(demo_root.glob("*/archive")).joinpath("ACC00001").glob("*.dcm"))


@pytest.fixture(scope="module")
def app(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    server = AppServer(
        [f"ckpt={run}", f"paths.output_dir={folder}", "max_upload_mb=1", "queue.errors=6"], folder
    )
    server.start()
    yield server
    server.stop()


def client(app, downloads: bool = True) -> Client:
    """An API client; ``downloads``: fetch the files the app returns (into a folder of the
    client's own: two clients at once must not write one file)."""
    folder = app.folder / "downloads" / f"{threading.get_ident()}" if downloads else False
    return Client(app.url, verbose=False, download_files=str(folder) if folder else False)


def uploads(app) -> list[Path]:
    return sorted(app.folder.glob("app/results_*/uploads/upload_*"))


def test_an_exam_gets_the_density_mammo_predict_gives_with_every_image_shown(app, run, exam, tmp_path):
    from mammo.predict import main

    summary, cards, images, files = client(app).predict([handle_file(f) for f in exam], api_name="/predict")
    assert "**Exam ACC00001: density " in summary and "4 image(s) predicted" in summary
    assert len(cards) == 4 and all(Path(c["image"]).stat().st_size > 1000 for c in cards)
    assert {c["caption"].split(" · ")[1] for c in cards} == {"L CC", "L MLO", "R CC", "R MLO"}
    downloaded = {Path(f).name: pd.read_csv(f) for f in files}
    assert set(downloaded) >= {"predictions.csv", "predictions_breast.csv", "predictions_exam.csv"}

    input_dir = tmp_path / "exam"
    input_dir.mkdir()
    for f in exam:
        shutil.copy(f, input_dir / f.name)
    assert (
        run_cli(main, [f"ckpt={run}", f"input={input_dir}", "num_workers=0", f"paths.output_dir={tmp_path}"])
        == 0
    )
    predicted = next(tmp_path.glob("predictions/results_*"))
    for name, key in (("predictions.csv", "image"), ("predictions_exam.csv", "AccessionNumber")):
        cli = pd.read_csv(predicted / name)
        ours = downloaded[name]
        if key == "image":
            cli[key], ours[key] = cli[key].map(lambda p: Path(p).name), ours[key].map(lambda p: Path(p).name)
        cli, ours = cli.set_index(key).sort_index(), ours.set_index(key).sort_index()
        probs = [c for c in cli.columns if c.startswith("prob_class")]
        pd.testing.assert_frame_equal(ours[probs], cli[probs], rtol=0, atol=1e-7)
        assert list(ours["predicted_letter"]) == list(cli["predicted_letter"])


@pytest.mark.parametrize("bad", ["text", "empty", "ct", "too_large"])
def test_a_bad_upload_gets_one_line_and_changes_nothing(app, exam, tmp_path, bad):
    if bad == "text":
        path = tmp_path / "notes.dcm"
        path.write_text("not a DICOM")
        line = "upload: no readable mammogram: notes.dcm"
    elif bad == "empty":
        path = tmp_path / "empty.dcm"
        path.write_bytes(b"")
        line = "upload: empty.dcm: empty"
    elif bad == "ct":
        ct = pydicom.dcmread(exam[0])
        ct.Modality = "CT"
        path = tmp_path / "slice.dcm"
        ct.save_as(path)
        line = "Modality CT is not a mammogram"
    else:  # the app was started with max_upload_mb=1; gradio_client checks before sending
        import httpx

        before = uploads(app)
        huge = {"files": ("huge.dcm", b"\0" * (2 * 1024**2), "application/dicom")}
        answer = httpx.post(f"{app.url}/gradio_api/upload", files=huge, timeout=60)
        assert answer.status_code == 413 and "maximum allowed size of 1048576 bytes" in answer.text
        assert uploads(app) == before
        return
    before = uploads(app)
    with pytest.raises(AppError) as refused:
        client(app).predict([handle_file(path)], api_name="/predict")
    message = str(refused.value)
    assert line in message and "\n" not in message.strip() and "Traceback" not in message
    assert uploads(app) == before


def test_readings_are_kept_through_a_reload_and_a_sigkill(app, run):
    reader = client(app)
    first = reader.predict("ann", True, api_name="/start")
    assert first[3].endswith(" of 9 read") and first[3].startswith("0 ")  # 6 errors, 3 controls
    assert "label" not in first[2]  # blind: neither the label nor the model's density
    shown = first
    for answer in ("A", "C", "cannot tell"):
        shown = reader.predict("ann", shown[0], answer, "a note, with a comma", True, api_name="/read")
    assert shown[3].startswith("3 of 9")
    again = client(app).predict("ann", False, api_name="/start")  # a reload: a new session
    assert again[0] == shown[0] and again[3].startswith("3 of 9") and "label " in again[2]
    reader.predict("ann", again[0], "D", "", True, api_name="/read")  # confirmed before the kill

    app.stop(signal.SIGKILL)
    app.start()
    resumed = client(app).predict("ann", True, api_name="/start")
    assert resumed[3].startswith("4 of 9")
    readings = read_readings(reader_file(run, "ann"))
    assert list(readings["reading"]) == ["1", "3", "cannot_tell", "4"]
    assert readings["note"][0] == "a note, with a comma"


def test_two_readers_at_once_write_their_own_files(app, run):
    failures = []

    def read_all(name):
        try:
            me = client(app, downloads=False)
            shown = me.predict(name, True, api_name="/start")
            while shown[0]:
                shown = me.predict(name, shown[0], "B", "", True, api_name="/read")
        except Exception as exc:  # shown by the assertion below, not lost in the thread
            failures.append(f"{name}: {exc!r}")

    workers = [threading.Thread(target=read_all, args=(name,)) for name in ("bob", "cy")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert not failures
    for name in ("bob", "cy"):
        readings = read_readings(reader_file(run, name))
        assert len(readings) == 9 and set(readings["reader"]) == {name} and set(readings["reading"]) == {"2"}
    kappas, _ = client(app).predict(api_name="/agreement")
    pairs = pd.DataFrame(kappas["data"], columns=kappas["headers"]).set_index("pair")
    assert {"bob vs label", "bob vs model", "bob vs cy"} <= set(pairs.index)
    assert pairs.loc["bob vs cy", "images"] == 9


def test_browse_lists_the_runs_images_with_counts_per_split(app, run):
    counts, table, thumbs = client(app).predict("val", "all", "", api_name="/browse")
    counts = pd.DataFrame(counts["data"], columns=counts["headers"]).set_index("split")
    split = pd.read_csv(run / "split.csv")
    assert counts.loc["val", "images"] == (split["split"] == "val").sum()
    assert counts.loc["train", "patients"] == split[split["split"] == "train"]["PatientID"].nunique()
    table = pd.DataFrame(table["data"], columns=table["headers"])
    assert len(table) == (split["split"] == "val").sum() and set(table["split"]) == {"val"}
    assert set(table["view"]) == {"CC", "MLO"} and table["predicted"].isin(list("ABCD")).all()
    assert len(thumbs) == min(24, len(table)) and thumbs[0]["caption"].startswith(table["image_id"][0])
    pictures = client(app).predict(table["AccessionNumber"][0], api_name="/exam")
    assert (
        len(pictures) == (table["AccessionNumber"] == table["AccessionNumber"][0]).sum() or len(pictures) == 4
    )


def test_another_host_without_a_password_is_refused_in_one_line(run, tmp_path, monkeypatch):
    from mammo.app import main

    monkeypatch.delenv("MAMMO_APP_PASSWORD", raising=False)
    code, console = console_of(main, [f"ckpt={run}", "host=0.0.0.0", f"paths.output_dir={tmp_path}"])
    assert code != 0
    assert "set the environment variable MAMMO_APP_PASSWORD to its password" in last_line(console)


def tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    next(t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == name).click()


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def test_a_person_drops_an_exam_and_reads_in_a_real_browser(app, exam, browser):
    from selenium.webdriver.common.by import By

    browser.set_window_size(1300, 1500)
    browser.get(app.url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, exam)))
    wait_for(browser, lambda d: "R_MLO.dcm" in d.page_source)  # uploaded
    browser.find_element(By.ID, "predict-button").click()
    summary = wait_for(browser, lambda d: "density" in d.find_element(By.ID, "predict-summary").text and d)
    assert "4 image(s) predicted" in summary.find_element(By.ID, "predict-summary").text
    cards = browser.find_elements(By.CSS_SELECTOR, "#predict-cards img")
    assert len(cards) == 4
    for card in cards:  # the gallery loads an image once it is in view
        browser.execute_script("arguments[0].scrollIntoView()", card)
        wait_for(browser, lambda d, c=card: d.execute_script("return arguments[0].naturalWidth", c) > 100)

    tab(browser, "Adjudicate")
    browser.find_element(By.CSS_SELECTOR, "#reader-name textarea, #reader-name input").send_keys("eve")
    browser.find_element(By.ID, "reading-start").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "reading-progress").text.startswith("0 of 9"))
    browser.find_element(By.XPATH, "//*[@id='reading-answer']//label[contains(., 'C')]").click()
    browser.find_element(By.ID, "reading-save").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "reading-progress").text.startswith("1 of 9"))

    browser.refresh()  # a reload forgets the page, not the reading
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button[role=tab]"))
    tab(browser, "Adjudicate")
    browser.find_element(By.CSS_SELECTOR, "#reader-name textarea, #reader-name input").send_keys("eve")
    browser.find_element(By.ID, "reading-start").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "reading-progress").text.startswith("1 of 9"))

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    import json

    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    assert not [
        u for u in urls if not u.startswith((app.url, "data:", "blob:"))
    ]  # nothing leaves the machine


def test_the_app_stops_on_sigterm_with_a_completed_summary_and_its_closing_line(app):
    import json

    app.stop(signal.SIGTERM)
    summary = json.loads(sorted(app.folder.glob("app/results_*/summary.json"))[-1].read_text())
    assert summary["status"] == "completed" and summary["experiment_type"] == "app"
    log = sorted(app.folder.glob("app/results_*/run.log"))[-1].read_text()
    assert "App stopped; uploads: " in log and "data.readings=[<the folder read>]" in log


def test_browse_shows_a_data_configs_images_not_split(run, demo_root, tmp_path):
    """``python -m mammo.app ckpt=<run> data=dicom_csv data.csv=... data.dicom_root=...``: the
    label file's images, read as a run reads them, with the checkpoint's preprocessing."""
    root = next(demo_root.glob("*"))
    data = ["data=dicom_csv", f"data.csv={root / 'classificacao.csv'}", f"data.dicom_root={root / 'archive'}"]
    server = AppServer([f"ckpt={run}", f"paths.output_dir={tmp_path}", *data], tmp_path).start()
    try:
        counts, table, thumbs = client(server, downloads=False).predict("all", "all", "", api_name="/browse")
    finally:
        server.stop()
    counts = pd.DataFrame(counts["data"], columns=counts["headers"]).set_index("split")
    table = pd.DataFrame(table["data"], columns=table["headers"])
    labels = pd.read_csv(root / "classificacao.csv")
    assert list(counts.index) == ["not split"] and counts.loc["not split", "images"] == 4 * len(labels)
    assert (
        counts.loc["not split", "patients"] == table["PatientID"].nunique()
        and (table["predicted"] == "").all()
    )
    assert set(table["view"]) == {"CC", "MLO"}
