"""The app's page (Gradio Blocks): Predict, Browse and Adjudicate tabs. Each event is also an
HTTP API endpoint (its ``api_name``), which the tests drive with ``gradio_client``. A handler's
:class:`~mammo.core.errors.MammoError` becomes one line on the page (``gr.Error``) and changes
nothing else shown."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from mammo.core.errors import DataError, MammoError
from mammo.evaluation.agreement import AGAINST_COLUMNS, AGREEMENT_COLUMNS
from mammo.webapp.reading_room import ANSWERS

log = logging.getLogger("mammo")
THEME_FONTS = {
    "font": ["ui-sans-serif", "system-ui", "sans-serif"],
    "font_mono": ["ui-monospace", "monospace"],
}
"""Fonts on the machine: the page fetches nothing from outside it (Gradio's default theme loads web fonts)."""


def one_line(handler):
    """A handler whose :class:`MammoError` is shown as one line on the page."""

    @functools.wraps(handler)
    def shown(*args):
        try:
            return handler(*args)
        except MammoError as exc:
            log.warning("%s", exc)
            raise gr.Error(str(exc), print_exception=False) from None

    return shown


def theme():
    return gr.themes.Default(**THEME_FONTS)


def build_page(title: str, predictor, catalogue, room, resamples: int, seed: int) -> gr.Blocks:
    """The page over an :class:`~mammo.webapp.exams.ExamPredictor`, a
    :class:`~mammo.webapp.catalogue.Catalogue` and a :class:`~mammo.webapp.reading_room.ReadingRoom`."""
    with gr.Blocks(title=f"mammo · {title}", analytics_enabled=False) as page:
        gr.Markdown(f"## mammo · {title}")
        with gr.Tab("Predict"):
            predict_tab(predictor)
        with gr.Tab("Browse"):
            browse_tab(catalogue)
        with gr.Tab("Adjudicate"):
            adjudicate_tab(room, resamples, seed)
    return page


def predict_tab(predictor) -> None:
    files = gr.File(file_count="multiple", label="Drop DICOM files or a zip (an image, a breast, exams)")
    go = gr.Button("Predict", variant="primary", elem_id="predict-button")
    summary = gr.Markdown(elem_id="predict-summary")
    cards = gr.Gallery(
        label="File with crop box and chest wall · model input · Grad-CAM",
        elem_id="predict-cards",
        columns=2,
        object_fit="contain",
        height="auto",
    )
    images = gr.Dataframe(label="Images", interactive=False)
    downloads = gr.File(label="CSV", file_count="multiple", interactive=False)

    @one_line
    def predict(paths):
        view = predictor.predict(paths)
        shown = [(str(path), caption) for path, caption in view.cards]
        return view.summary, shown, view.shown_images(), [str(p) for p in view.downloads]

    go.click(predict, [files], [summary, cards, images, downloads], api_name="predict")


def browse_tab(catalogue) -> None:
    with gr.Row():
        split = gr.Dropdown(["all", "train", "val", "test", "eval"], value="all", label="Split")
        density = gr.Dropdown(["all", "A", "B", "C", "D"], value="all", label="Density")
        text = gr.Textbox(label="Image, exam or patient contains")
        show = gr.Button("Show")
    counts = gr.Dataframe(label="Images, patients and densities per split", interactive=False)
    table = gr.Dataframe(label="Images (select a row to open its exam)", interactive=False)
    thumbs = gr.Gallery(
        label="The first 24 of them, as their files show", columns=8, object_fit="contain", height="auto"
    )
    exam = gr.Textbox(label="Exam (AccessionNumber)")
    pictures = gr.Gallery(
        label="The exam: file with crop box and chest wall · model input",
        columns=2,
        object_fit="contain",
        height="auto",
    )

    @one_line
    def browse(split, density, text):
        shown = catalogue.table(split, density, text)
        return catalogue.counts(), shown, catalogue.thumbnails(shown)

    @one_line
    def open_exam(accession):
        return catalogue.exam(accession)

    def selected(frame, event: gr.SelectData):
        return str(frame.iloc[event.index[0]]["AccessionNumber"])

    show.click(browse, [split, density, text], [counts, table, thumbs], api_name="browse")
    table.select(selected, [table], [exam], api_visibility="private").then(
        open_exam, [exam], [pictures], api_visibility="private"
    )
    exam.submit(open_exam, [exam], [pictures], api_name="exam")


def adjudicate_tab(room, resamples: int, seed: int) -> None:
    gr.Markdown(
        "The queue holds the model's confident errors and correct images, mixed. Each answer is saved "
        "to disk before the next image shows; come back under the same name to go on."
    )
    with gr.Row():
        reader = gr.Textbox(label="Your name (letters, digits, _ . -)", elem_id="reader-name")
        blind = gr.Checkbox(label="Blind: hide the label and the model's density", value=True)
        start = gr.Button("Start or resume", variant="primary", elem_id="reading-start")
    progress = gr.Markdown(elem_id="reading-progress")
    image_id = gr.Textbox(label="Image", interactive=False, elem_id="reading-image")
    facts = gr.Markdown()
    picture = gr.Image(label="File with crop box and chest wall · model input", interactive=False)
    answer = gr.Radio(list(ANSWERS), label="Density", elem_id="reading-answer")
    note = gr.Textbox(label="Note (optional)")
    save = gr.Button("Save and next", variant="primary", elem_id="reading-save")
    agree = gr.Button("Agreement")
    kappas = gr.Dataframe(
        label="Quadratic κ with 95 % patient-bootstrap intervals",
        headers=list(AGREEMENT_COLUMNS),
        interactive=False,
    )
    against = gr.Dataframe(
        label="Images where the readers agree against the label",
        headers=list(AGAINST_COLUMNS),
        interactive=False,
    )

    def shown(reader_name, blind_reading):
        now = room.next_for(reader_name, bool(blind_reading))
        return now.image_id or "", now.picture, now.facts, f"{now.done} of {now.total} read", None, ""

    @one_line
    def begin(reader_name, blind_reading):
        room.read_by(reader_name)  # checks the name
        return shown(reader_name, blind_reading)

    @one_line
    def read(reader_name, current, answer_given, note_text, blind_reading):
        if not answer_given:
            raise DataError("reading: choose a density (or cannot tell) first")
        room.record(reader_name, current, answer_given, note_text, bool(blind_reading))
        return shown(reader_name, blind_reading)

    outputs = [image_id, picture, facts, progress, answer, note]
    start.click(begin, [reader, blind], outputs, api_name="start")
    save.click(read, [reader, image_id, answer, note, blind], outputs, api_name="read")
    agree.click(
        one_line(lambda: room.agreement(resamples, seed)), None, [kappas, against], api_name="agreement"
    )
