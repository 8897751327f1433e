"""Open a study's storage from ``hydra.sweeper.storage``: the sweep, each trial's job and the study
report all go through :func:`open_storage`, so that every storage URL means the same to each.

* an RDB URL (``sqlite:///…``, ``postgresql://…``, ``mysql://…``): Optuna's ``RDBStorage``; the
  sweep's with heartbeats, so that workers tell a live trial of another worker from a dead one;
* ``journal:<file>``: Optuna's journal file storage (``JournalFileBackend``), an append-only log
  that workers on a shared file system write through file locks, with no database server (a SLURM
  cluster's scratch space). It keeps no heartbeats: a trial left running by a dead worker is told
  from its host and pid on that host only.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import random
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from mammo.artifacts.redact import mask, usable_url
from mammo.core.errors import ConfigError, first_line

log = logging.getLogger(__name__)
JOURNAL = "journal:"
SQLITE = "sqlite:///"


def open_storage(
    url: str | BaseStorage | None, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> BaseStorage | None:
    """The storage ``url`` names (``None``: in memory); an RDB has heartbeats with ``heartbeat_interval``."""
    if url is None or isinstance(url, BaseStorage):
        return url
    url = usable_url(str(url))  # a password from the command line is in the environment
    path = storage_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(JOURNAL):
        return JournalStorage(JournalFileBackend(str(path)))
    # SQLite: wait out other workers' writes
    engine_kwargs = {"connect_args": {"timeout": 60}} if path is not None else None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are experimental in Optuna, and what workers need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                )
        except Exception as exc:
            racing = "alembic_version" in str(exc) or "already exists" in str(exc)
            if racing and attempt < 4:  # workers that create a new database at the same instant
                log.info(f"Storage {mask(url)} is being created by another worker; retrying")
                time.sleep(0.5 + random.random())
                continue
            if isinstance(exc, ImportError | sqlalchemy.exc.OperationalError | sqlalchemy.exc.ArgumentError):
                raise unusable_storage(url, exc) from None
            raise
    raise AssertionError("unreachable")


def unusable_storage(url: str, exc: BaseException) -> ConfigError:
    """One line for a storage URL that cannot be opened: no driver for it, or no server there."""
    if isinstance(exc, ImportError):
        hint = (
            "install the postgres extra (pip install -e '.[postgres]': psycopg 3 and psycopg2)"
            if url.startswith("postgres")
            else "install the driver SQLAlchemy names for it"
        )
        why = f"no database driver for it is installed ({first_line(exc)}); {hint}"
    else:
        why = f"cannot connect ({first_line(getattr(exc, 'orig', None) or exc)})"
    return ConfigError(f"hydra.sweeper.storage={mask(url)}: {why}")


def storage_file(url: str) -> Path | None:
    """The file a ``journal:`` or ``sqlite:///`` storage URL names; ``None`` for a server."""
    if url.startswith(JOURNAL):
        return Path(url.removeprefix(JOURNAL).removeprefix("//"))
    if url.startswith(SQLITE):
        return Path(url.removeprefix(SQLITE))
    return None


@contextmanager
def one_worker_at_a_time(url: str | BaseStorage | None, study_name: str):
    """Hold the study's lock for workers that share ``url``: a file lock beside a SQLite or
    journal file, an advisory lock in PostgreSQL or MySQL (in memory, or another storage: none).

    Workers count the study's trials and ask for new ones under it, so that two asking at the same
    instant cannot both take the last of ``n_trials``. The operating system or the database server
    drops a lock whose worker dies."""
    url = url if isinstance(url, str) else ""
    path = storage_file(url)
    if path is not None:
        with open(f"{path}.{study_name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif url.startswith(("postgresql", "mysql")):
        yield from _database_lock(url, study_name)
    else:
        yield


def _database_lock(url: str, study_name: str):
    """PostgreSQL's ``pg_advisory_lock`` on a 64-bit key of the study name, or MySQL's ``GET_LOCK``."""
    if url.startswith("postgresql"):
        key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
        lock, unlock = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
    else:
        key = f"mammo:{study_name}"[:64]
        lock, unlock = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"
    engine = sqlalchemy.create_engine(usable_url(url), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(lock), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text(unlock), {"key": key})
    finally:
        engine.dispose()


def has_heartbeats(storage) -> bool:
    """Whether ``storage`` records heartbeats (an RDB opened with ``heartbeat_interval``)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
