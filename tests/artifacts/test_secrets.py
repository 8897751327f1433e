"""A password in a tracking URI or a storage URL reaches no file and no console line
(``mammo.artifacts.redact``), and an unreachable server is one line, at once."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SMALL_DEMO, TINY
from tests.servers import free_port, postgres_server
from tests.test_cli import cli


def files_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``secret``."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_tracking_password_is_masked_everywhere_and_an_unreachable_server_fails_at_once(
    tmp_path, demo_root
):
    secret = "Pw-for-the-tracker-81"
    uri = f"http://ann:{secret}@127.0.0.1:{free_port()}/"  # nothing listens there
    start = time.monotonic()
    proc = cli(
        *TINY,
        *SMALL_DEMO,
        "epochs=1",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={uri}",
        f"paths.output_dir={tmp_path}",
        f"paths.demo_dir={demo_root}",
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and time.monotonic() - start < 90  # not minutes of retries
    last = err.strip().splitlines()[-1]
    assert last.startswith("logger.mlflow.tracking_uri=http://ann:***@127.0.0.1:")
    assert "no MLflow tracking server answers there" in last and "Traceback" not in err
    assert secret not in out + err
    (run,) = (tmp_path / "mammo_tiny_density").glob("results_*")
    assert files_holding(tmp_path, secret) == []  # summary.json, run.log, .hydra/*.yaml
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "ann:***@" in summary["execution"]["command_line"]
    assert "ann:***@" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_a_storage_password_is_masked_everywhere_and_a_plain_postgresql_url_works(tmp_path, demo_root):
    """An HPO sweep on a real PostgreSQL (trust auth: the password is accepted, never needed) given
    as most people write it, ``postgresql://user:password@host/db``: psycopg 3, SQLAlchemy 2.1's
    driver for that URL, opens it, and the password is nowhere in the sweep's files or output."""
    import optuna

    from mammo.hpo.storage import open_storage

    secret = "Pw-for-the-database-27"
    with postgres_server() as url:  # postgresql+psycopg2://postgres@127.0.0.1:<port>/postgres
        plain = url.replace("postgresql+psycopg2://postgres@", f"postgresql://postgres:{secret}@")
        proc = cli(
            "-m",
            "hpo=density_optuna",
            *TINY,
            *SMALL_DEMO,
            "epochs=1",
            "gradcam_per_class=0",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage={plain}",
            f"paths.output_dir={tmp_path}",
            f"paths.demo_dir={demo_root}",
            cwd=tmp_path,
        )
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        study = optuna.load_study(study_name="mammo_tiny_density_density_optuna", storage=open_storage(url))
        assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 2
    assert secret not in out + err
    assert files_holding(tmp_path, secret) == []
    hydra = (tmp_path / "mammo_tiny_density" / "hpo_runs" / "results_1" / ".hydra" / "hydra.yaml").read_text()
    assert "postgres:***@127.0.0.1" in hydra  # the storage as given, masked


def test_an_unreachable_storage_server_is_one_line(tmp_path):
    proc = cli(
        "-m",
        "hpo=density_optuna",
        *TINY,
        f"hydra.sweeper.storage=postgresql://ann:Pw-3@127.0.0.1:{free_port()}/study",
        f"paths.output_dir={tmp_path}",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("hydra.sweeper.storage=postgresql://ann:***@127.0.0.1:") and "cannot connect" in last
    )
    assert "Pw-3" not in out + err


def test_a_password_in_a_config_file_is_masked_in_the_runs_copies(tmp_path, demo_root, capsys):
    """A password written in an experiment file (not the command line): Hydra copies the config
    into ``.hydra/``; mammo masks the copies and every line it logs."""
    from mammo.train import main
    from tests.conftest import run_cli

    secret = "Pw-in-a-yaml-55"
    experiment = tmp_path / "mine" / "experiment" / "tracked.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\n"
        "defaults:\n  - override /logger: mlflow\n"
        f"logger:\n  mlflow:\n    tracking_uri: http://ann:{secret}@127.0.0.1:{free_port()}/\n"
    )
    args = ["--config-dir", str(tmp_path / "mine"), "experiment=tracked", *TINY, *SMALL_DEMO]
    args += ["epochs=1", f"paths.output_dir={tmp_path / 'out'}", f"paths.demo_dir={demo_root}"]
    assert run_cli(main, [a for a in args if a != "logger=none"]) == 1
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert files_holding(tmp_path / "out", secret) == []
    (config,) = (tmp_path / "out").glob("*/results_*/.hydra/config.yaml")
    assert "ann:***@127.0.0.1" in config.read_text()


class TrackingRequests(http.server.BaseHTTPRequestHandler):
    """A stand-in tracking server on loopback that records what reaches it: each request's path
    and Authorization header. ``/health`` answers 200; the REST calls MLflow's client makes
    answer 404 ``RESOURCE_DOES_NOT_EXIST``, so a run stops at its first write."""

    seen: list = []

    def _answer(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = b"OK" if self.path.endswith("/health") else b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_a_password_in_a_config_file_reaches_the_tracking_server_as_one_from_the_command_line(
    tmp_path, demo_root
):
    """From a YAML the URL kept ``user:pw@`` and the run said no server answered while one did."""
    secret = "Pw-in-a-yaml-56"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TrackingRequests)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://ann:{secret}@127.0.0.1:{server.server_address[1]}/"
    experiment = tmp_path / "mine" / "experiment" / "tracked.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "# @package _global_\ndefaults:\n  - override /logger: mlflow\n"
        f"logger:\n  mlflow:\n    tracking_uri: {uri}\n"
    )
    common = [
        *(a for a in TINY if a != "logger=none"),
        *SMALL_DEMO,
        "epochs=1",
        f"paths.demo_dir={demo_root}",
    ]
    seen = {}
    try:
        for where, args in {
            "config file": ["--config-dir", str(tmp_path / "mine"), "experiment=tracked"],
            "command line": ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}"],
        }.items():
            TrackingRequests.seen = []
            proc = cli(*args, *common, f"paths.output_dir={tmp_path / where.replace(' ', '_')}")
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 1 and "no MLflow tracking server answers there" not in err, where
            assert secret not in out + err
            seen[where] = list(TrackingRequests.seen)
    finally:
        server.shutdown()
    credentials = "Basic " + base64.b64encode(f"ann:{secret}".encode()).decode()
    api = [(path, auth) for path, auth in seen["config file"] if "/api/" in path]
    assert api and all(auth == credentials for _, auth in api)  # MLflow's client sent them
    assert set(seen["config file"]) == set(seen["command line"])  # a client retry under load repeats one
    assert all(secret not in path for path, _ in seen["config file"])
    assert files_holding(tmp_path / "config_file", secret) == []
