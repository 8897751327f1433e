"""Real servers for the tests that need one, started on a free loopback port and stopped by their pid.

A test that needs a server binary this machine lacks is skipped with the command that installs it
(``.ci/run`` does, so CI runs them all).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import missing_component

POSTGRES_HINT = "apt-get install postgresql (as .ci/run does)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (``initdb``, ``postgres``), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _server_user() -> dict:
    """PostgreSQL refuses to run as root: as root, run it as Debian's ``postgres`` user."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing_component("a 'postgres' user to run PostgreSQL as (running as root)", POSTGRES_HINT)
    return {"user": "postgres", "group": "postgres"}


@contextmanager
def postgres_server():
    """A throwaway PostgreSQL cluster in a temporary folder on a free loopback port (trust auth).

    Yields its URL for SQLAlchemy, with the psycopg2 driver that the lock pins
    (``postgresql+psycopg2://postgres@127.0.0.1:<port>/postgres``)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing_component("PostgreSQL's server (initdb)", POSTGRES_HINT)
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="mammo-pg-"))  # under /tmp: the server's user must reach it
    if user:
        shutil.chown(folder, user["user"], user["group"])
    data, port = folder / "data", free_port()
    subprocess.run(
        [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        **user,
    )
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [bin_dir / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", folder],
        stdout=log,
        stderr=subprocess.STDOUT,
        **user,
    )
    try:
        _wait_for_port(port, server, folder / "server.log")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        os.kill(server.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        server.wait(timeout=60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def loopback_server(program: str, extra: str, arguments, timeout: float = 60):
    """``program`` (a script of this Python's environment; ``extra``: the extra that installs it)
    run as ``program *arguments(port)`` on a free loopback port, in a process group of its own;
    yields its base URL; stopped, with its workers, by its pid."""
    exe = shutil.which(program, path=str(Path(sys.executable).parent))
    if exe is None:
        missing_component(program, f"pip install -e '.[{extra}]' (the lock has it)")
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"mammo-{program}-"))
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [exe, *arguments(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_for_port(port, server, folder / "server.log", timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def dashboard_server(storage: str):
    """optuna-dashboard's server over ``storage`` (a URL or a journal file); yields its base URL."""
    return loopback_server(
        "optuna-dashboard", "dashboard", lambda port: [storage, "--host", "127.0.0.1", "--port", str(port)]
    )


def mlflow_server(backend_store_uri: str):
    """MLflow's tracking server and UI over ``backend_store_uri``; yields its base URL."""
    return loopback_server(
        "mlflow",
        "mlflow",
        lambda port: ["server", "--backend-store-uri", backend_store_uri, "--host", "127.0.0.1",
                      "--port", str(port), "--workers", "1"],
        timeout=120,
    )  # fmt: skip


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


class AppServer:
    """``python -m mammo.app`` with ``arguments`` on a free loopback port, in a process group of
    its own: started, killed (any signal) and started again on the same port and folders."""

    def __init__(self, arguments: list[str], folder: Path) -> None:
        self.port, self.arguments, self.folder = free_port(), arguments, folder
        self.url, self.process, self.starts = f"http://127.0.0.1:{self.port}", None, 0

    def start(self, timeout: float = 120) -> AppServer:
        pytest_skip_without("gradio", "app")
        self.starts += 1
        log_path = self.folder / f"app{self.starts}.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mammo.app", *self.arguments, f"port={self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
            )
        _wait_for_port(self.port, self.process, log_path, timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)
        self.process = None


def pytest_skip_without(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        missing_component(module, f"pip install -e '.[{extra}]' (the lock has it)")
