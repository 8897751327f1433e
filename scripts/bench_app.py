"""The app's time from upload to result for one 4-view exam, against ``mammo.predict``'s time per
exam on the same files, measured in one run; and the app's start-up time.

    python scripts/bench_app.py [--model tiny] [--img-size 64] [--exam-size 3328x2560] [--repeats 5]

A model is trained for one epoch on the small demo set (``--model``: a conf/model option); the
exam is a demo exam written at a full-field digital mammogram's size (``--exam-size``, height x
width: decoding and preprocessing such files is most of a prediction's work). The app
(``python -m mammo.app``) is started on a free loopback port and timed until it answers (start-up).
Then, alternating, ``--repeats`` times each: the exam's four DICOM files uploaded and predicted
through the app's HTTP API (``gradio_client``: upload, prediction at three levels, the four cards
with their Grad-CAM, the CSV files, everything the page gets back), and ``mammo.predict``'s own work
on the same four files in this process with its model loaded (``predict_files``: the floor a
prediction cannot go under). The best of each is compared (goal: app <= 1.2 x predict). Last,
``python -m mammo.predict`` on the exam as a user runs it (a new process: start-up, model, exam).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mammo.data.demo import ensure_demo_dataset  # noqa: E402
from mammo.evaluation.prediction import predict_files  # noqa: E402
from mammo.models.ensemble import load_predictor  # noqa: E402
from tests.conftest import SMALL_DEMO, TINY, run_cli  # noqa: E402


def trained(tmp: Path, model: str, img_size: int) -> Path:
    from mammo.train import main

    settings = [a for a in TINY if not a.startswith(("model=", "img_size="))]
    args = [*settings, f"model={model}", f"img_size={img_size}", "pretrained=false", *SMALL_DEMO, "epochs=1"]
    assert run_cli(main, [*args, f"paths.output_dir={tmp}", f"paths.demo_dir={tmp / 'demo'}"]) == 0
    return next(tmp.glob("mammo_*_density/results_1"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(run: Path, out: Path) -> tuple[subprocess.Popen, str, float]:
    port, started = free_port(), time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "-m", "mammo.app", f"ckpt={run}", f"port={port}", f"paths.output_dir={out}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return app, f"http://127.0.0.1:{port}", time.perf_counter() - started
        if app.poll() is not None or time.perf_counter() - started > 300:
            raise SystemExit("the app did not start")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--exam-size", default="3328x2560", help="height x width of the exam's files")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = trained(tmp, args.model, args.img_size)
        height, width = (int(v) for v in args.exam_size.split("x"))
        big = ensure_demo_dataset(tmp / "exam", n_patients=4, height=height, width=width)
        exam = sorted((big / "archive" / "ACC00001").glob("*.dcm"))
        checkpoint = load_predictor(str(run))
        app, url, startup = start_app(run, tmp / "app")
        try:
            client = Client(url, verbose=False, download_files=str(tmp / "downloads"))
            app_times, predict_times = [], []
            for k in range(args.repeats + 1):  # the first of each warms up
                start = time.perf_counter()
                summary = client.predict([handle_file(f) for f in exam], api_name="/predict")[0]
                app_times.append(time.perf_counter() - start)
                assert "4 image(s) predicted" in summary
                folder = tmp / f"predict_{k}"
                folder.mkdir()
                start = time.perf_counter()
                predict_files(checkpoint, exam, folder, 16, 0, False, "mean")
                predict_times.append(time.perf_counter() - start)
        finally:
            os.killpg(app.pid, 15)
            app.wait(60)
        shutil.rmtree(tmp / "downloads", ignore_errors=True)
        start = time.perf_counter()
        command = [sys.executable, "-m", "mammo.predict", f"ckpt={run}", f"input={exam[0].parent}"]
        subprocess.run([*command, f"paths.output_dir={tmp / 'cli'}"], check=True, capture_output=True)
        cli = time.perf_counter() - start
        logged = (next((tmp / "app").glob("app/results_*")) / "run.log").read_text()
        server = min(float(m) for m in re.findall(r"unreadable, in ([0-9.]+) s", logged)[1:])
    best_app, best_predict = min(app_times[1:]), min(predict_times[1:])
    settings = f"model={args.model} img_size={args.img_size}, best of {args.repeats}"
    print(f"one 4-view exam of {args.exam_size} px files, {settings}:")
    print(f"  app, upload to result:   {best_app:6.3f} s   (of which the app's own work: {server:.3f} s)")
    ratio = best_app / best_predict
    print(f"  mammo.predict's work:    {best_predict:6.3f} s   app / predict = {ratio:.2f}  (goal <= 1.2)")
    print(f"  python -m mammo.predict on the exam (a new process): {cli:.1f} s")
    print(f"  app start-up (to its port answering): {startup:.1f} s")


if __name__ == "__main__":
    main()
