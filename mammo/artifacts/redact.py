"""Passwords in URLs never reach a file or the console.

A tracking URI or a study's storage URL may carry ``user:password@``. ``mammo.train`` moves a
password given on the command line into the environment variable its library reads
(:func:`hide_argv_passwords`: ``MLFLOW_TRACKING_PASSWORD`` for an HTTP tracking server,
``PGPASSWORD`` for PostgreSQL, ``MYSQL_PWD`` for MySQL) and leaves ``user:***@`` in its place, so
Hydra's ``.hydra/`` files, ``summary.json``, run.log and the console only ever see the mask; the
code that connects turns the mask back into a working URL in memory (:func:`usable_url`). Whatever
else mammo writes or prints goes through :func:`mask` (a password written in a config file, a
library's error message naming the URL).

Imports nothing of mammo's: the error hook and the log formatter use it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, unquote

MASK = "***"
_CREDENTIALS = re.compile(
    r"(?P<head>\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^:/@\s'\"]*)):(?P<password>[^@/\s'\"]+)@"
)
PASSWORD_VARIABLES = {"http": "MLFLOW_TRACKING_PASSWORD", "https": "MLFLOW_TRACKING_PASSWORD"}
PASSWORD_VARIABLES |= {"postgresql": "PGPASSWORD", "postgres": "PGPASSWORD", "mysql": "MYSQL_PWD"}
"""URL scheme (before any ``+driver``) -> the environment variable its client library reads."""


def mask(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ``***``.

    >>> mask("logger.mlflow.tracking_uri=http://ann:s3cret@host:5000/ and sqlite:///x.db")
    'logger.mlflow.tracking_uri=http://ann:***@host:5000/ and sqlite:///x.db'
    """
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@", text) if "://" in text else text


def masked(value):
    """``value`` (a string, or dicts and lists of them) with :func:`mask` applied to each string."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    return value


def password_variable(scheme: str) -> str | None:
    """The environment variable that holds a ``scheme`` URL's password (``postgresql+psycopg2``
    -> ``PGPASSWORD``); ``None`` for a scheme mammo knows none for."""
    return PASSWORD_VARIABLES.get(scheme.split("+", 1)[0].lower())


def hide_argv_passwords(argv: list[str] | None = None) -> None:
    """Replace each ``user:password@`` of the command line by ``user:***@``, the password going to
    its library's environment variable (:data:`PASSWORD_VARIABLES`; an HTTP URL's user to
    ``MLFLOW_TRACKING_USERNAME``). Child processes (DDP ranks, sweep jobs) inherit both."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        for found in _CREDENTIALS.finditer(arg):
            variable = password_variable(found["scheme"])
            if found["password"] == MASK or variable is None:
                continue
            os.environ[variable] = unquote(found["password"])
            if variable == "MLFLOW_TRACKING_PASSWORD":
                os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(found["user"])
        argv[i] = mask(arg)


def usable_url(url: str) -> str:
    """A URL whose password is the mask, made usable in memory: an HTTP URL loses its credentials
    (MLflow sends ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``), a database URL gets
    its password back from the environment (or none, for the client to look further). An HTTP URL
    with its password written out (a config file's) goes the same way: user and password to those
    variables, in this process only. Any other URL is returned as it is.

    >>> os.environ["PGPASSWORD"] = "p@ss"
    >>> usable_url("postgresql+psycopg2://ann:***@db/study")
    'postgresql+psycopg2://ann:p%40ss@db/study'
    >>> usable_url("http://ann:***@host:5000")
    'http://host:5000'
    >>> usable_url("http://ann:pw%40x@host:5000"), os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    ('http://host:5000', 'pw@x')
    >>> os.environ.pop("MLFLOW_TRACKING_USERNAME")
    'ann'
    >>> del os.environ["PGPASSWORD"]
    """

    def restore(found: re.Match) -> str:
        variable = password_variable(found["scheme"])
        if variable is None:
            return found[0]
        if variable == "MLFLOW_TRACKING_PASSWORD":
            if found["password"] != MASK:  # written in a config file: used as one from the command line
                os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(found["user"])
                os.environ[variable] = unquote(found["password"])
            return f"{found['scheme']}://"
        if found["password"] != MASK:
            return found[0]
        password = os.environ.get(variable)
        if password is None:  # the client library looks further itself (libpq: ~/.pgpass)
            return f"{found['head']}@"
        return f"{found['head']}:{quote(password, safe='')}@"

    return _CREDENTIALS.sub(restore, url)


def mask_files(folder) -> None:
    """:func:`mask_file` of each file of ``folder`` (Hydra's ``.hydra/``), if it exists."""
    for path in sorted(Path(folder).glob("*")) if Path(folder).is_dir() else []:
        mask_file(path)


def mask_file(path) -> None:
    """Rewrite ``path`` masked if its text holds a password (one from a config file: Hydra copies
    configs before mammo sees them)."""
    path = Path(path)
    text = path.read_text(errors="replace") if path.is_file() else ""
    if mask(text) != text:
        path.write_text(mask(text))
