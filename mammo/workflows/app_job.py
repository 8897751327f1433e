"""``python -m mammo.app``'s job: check the login settings, load the model once, build the page's
parts, and serve it until stopped."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from pathlib import Path

from omegaconf import DictConfig

from mammo.artifacts.runlog import route_library_logs
from mammo.core.errors import ConfigError
from mammo.models.device import for_inference, resolve_device
from mammo.models.ensemble import load_predictor, named_by
from mammo.readings.worklist import QueueSettings
from mammo.webapp.catalogue import Catalogue
from mammo.webapp.exams import ExamPredictor
from mammo.webapp.reading_room import ReadingRoom
from mammo.workflows.evaluation_job import checkpoint_datamodule

log = logging.getLogger("mammo")


def login(host: str, user: str, password_env: str):
    """Gradio's ``auth`` for ``host``: none on a loopback address; elsewhere ``(user, password)``
    with the password from the environment variable ``password_env`` (never written or printed),
    and one line when it is not set."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    password = os.environ.get(password_env, "")
    if not password:
        raise ConfigError(
            f"host={host}: the app is reachable from other machines there, so it needs a login: set the "
            f"environment variable {password_env} to its password (user: app_user={user})"
        )
    return (user, password)


def reviewed_folder(cfg: DictConfig, checkpoint) -> Path:
    """The folder browsed and read: ``folder``, else a run or CV folder given as ``ckpt``, else the
    checkpoint's run."""
    if cfg.folder:
        return Path(cfg.folder)
    if isinstance(cfg.ckpt, str) and named_by(Path(cfg.ckpt)) in ("run", "cv"):
        return Path(cfg.ckpt)
    return checkpoint.run_dir


def browsed(cfg: DictConfig, checkpoint, folder: Path, preprocessing) -> Catalogue:
    """What Browse shows: the images of ``data=...`` where it is given (read as a run reads them,
    with the checkpoint's preprocessing; not cached: Browse shows a few), else ``folder``'s."""
    if cfg.get("data") is None:
        return Catalogue.of_folder(folder, preprocessing)
    cfg.data.cache_mode = "none"
    return Catalogue.of_data(checkpoint_datamodule(cfg, checkpoint), preprocessing)


def open_app(cfg: DictConfig, out: Path):
    """The page (not yet served), its login, and summary.json's fields."""
    try:
        from mammo.webapp.ui import build_page, theme
    except ImportError as exc:
        raise ConfigError(f"mammo.app needs Gradio: pip install -e '.[app]' ({exc})") from None

    route_library_logs()
    auth = login(str(cfg.host), str(cfg.app_user), str(cfg.password_env))
    started = time.perf_counter()
    checkpoint = load_predictor(cfg.ckpt, cfg.get("tta"))
    if checkpoint.model.hparams.embeddings_fusion:
        raise ConfigError(
            "mammo.app: this checkpoint fuses precomputed embeddings; the app predicts files alone"
        )
    device = resolve_device(cfg.device)
    checkpoint.model = for_inference(checkpoint.model, device)
    max_bytes = int(cfg.max_upload_mb) * 1024**2
    predictor = ExamPredictor(checkpoint, out, int(cfg.batch_size), str(cfg.eval.aggregate), max_bytes)
    folder = reviewed_folder(cfg, checkpoint)
    catalogue = browsed(cfg, checkpoint, folder, predictor.preprocessing)
    settings = QueueSettings(int(cfg.queue.errors), float(cfg.queue.controls), int(cfg.seed))
    room = ReadingRoom(folder, predictor.preprocessing, settings)
    title = f"{checkpoint.meta.get('arch')} ({checkpoint.path.parent.name})"
    page = build_page(title, predictor, catalogue, room, int(cfg.eval.bootstrap), int(cfg.seed))
    log.info(
        "App ready in %.1f s: model %s on %s; browsing and reading %s (%d image(s) in the reading queue)",
        time.perf_counter() - started,
        checkpoint.path,
        device,
        folder,
        len(room.queue),
    )
    launch = {"auth": auth, "theme": theme(), "max_file_size": f"{int(cfg.max_upload_mb)}mb"}
    return page, launch, {"checkpoint": str(checkpoint.path), "folder": str(folder), "host": str(cfg.host)}


def serve(cfg: DictConfig, out: Path) -> dict:
    """Serve the app on ``host:port`` until Ctrl-C or SIGTERM, the app's normal end (summary.json:
    completed); returns summary.json's fields."""
    page, launch, record = open_app(cfg, out)
    page.launch(
        server_name=str(cfg.host),
        server_port=int(cfg.port),
        quiet=True,
        footer_links=["api"],
        allowed_paths=[str(out)],
        prevent_thread_lock=True,
        **launch,
    )
    log.info("App: http://%s:%d (Ctrl-C stops it)", cfg.host, int(cfg.port))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        page.close()
    return record
