"""What a config may instantiate: the exact classes and functions that ``conf/`` names.

A ``_target_`` (or a logging config's ``()``/``class``) runs code. Whole packages such as
``torch.*`` or ``lightning.*`` hold process launchers, file writers and code loaders, so the list
that every entry hands Hydra (``hydra.main(execution_whitelist=...)``) is the set of targets the
shipped config files name, read from ``conf/`` itself (a new config option cannot be forgotten),
plus the researcher's own ``MAMMO_TRUSTED_TARGETS`` (comma-separated; ``mylab.*`` for a package).

Kept import-light: entries build the list at import time, and ``--help`` must stay fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mammo.core.errors import ConfigError, refused_target

TARGET_KEYS = ("_target_", "()", "class")
"""Keys whose value names code: Hydra's ``_target_`` and the ``logging.config`` factories."""


def conf_targets(conf_dir: str | os.PathLike) -> list[str]:
    """Every dotted name under a :data:`TARGET_KEYS` key in the YAML files of ``conf_dir``, sorted."""
    import yaml

    found: set[str] = set()
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        found.update(_named_targets(yaml.safe_load(path.read_text()) or {}))
    return sorted(found)


def _named_targets(node) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TARGET_KEYS and isinstance(value, str) and "${" not in value:
                yield value
            else:
                yield from _named_targets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _named_targets(item)


def trusted_targets(conf_dir: str | os.PathLike) -> list[str]:
    """:func:`conf_targets` plus ``MAMMO_TRUSTED_TARGETS`` from the environment."""
    own = [t.strip() for t in os.environ.get("MAMMO_TRUSTED_TARGETS", "").split(",") if t.strip()]
    return [*conf_targets(conf_dir), *own]


def is_trusted(target: str, trusted: list[str]) -> bool:
    """``target`` is listed, or lies in a package listed as ``pkg.*`` (Hydra's own rule).

    >>> trusted = ["torch.optim.AdamW"]
    >>> is_trusted("torch.optim.AdamW", trusted), is_trusted("torch.hub.load", trusted)
    (True, False)
    >>> is_trusted("mylab.nets.Net", ["mylab.*"])
    True
    """
    return any(target == t or (t.endswith(".*") and target.startswith(t[:-1])) for t in trusted)


def config_targets(node, path: str = "") -> Iterator[tuple[str, str]]:
    """``(key, target)`` for every ``_target_`` of a composed config (interpolations resolved)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig):
        items = [(str(k), k) for k in node.keys()]
    elif isinstance(node, ListConfig):
        items = [(str(i), i) for i in range(len(node))]
    else:
        return
    for name, key in items:
        where = f"{path}.{name}" if path else name
        if OmegaConf.is_missing(node, key):
            continue
        try:
            value = node[key]
        except Exception:  # an interpolation that only resolves inside a running job: not a target here
            continue
        if name == "_target_" and isinstance(value, str):
            yield where, value
        else:
            yield from config_targets(value, where)


def check_targets(cfg, trusted: list[str]) -> None:
    """Before any work: a ``_target_`` that is not trusted stops the command with one line naming
    the key, the target and the file it came from."""
    for key, target in config_targets(cfg):
        if not is_trusted(target, trusted):
            raise ConfigError(refused_target(key, target, origin_of(key, target)))


def origin_of(key: str, value: str) -> str:
    """Where a value of the running job's config was set (:func:`hydra_origin`)."""
    from hydra.core.hydra_config import HydraConfig

    return hydra_origin(HydraConfig.get(), value) if HydraConfig.initialized() else "the composed config"


def trusted_task(trusted: list[str]):
    """Decorate an entry's task function: its config's targets are checked first against
    ``trusted`` (:func:`check_targets`; the entry's own list, which a test may extend)."""

    def decorate(task):
        @functools.wraps(task)
        def checked(cfg):
            check_targets(cfg, trusted)
            return task(cfg)

        return checked

    return decorate


HYDRA_NODES = ("callbacks", "job_logging")
"""Hydra's own config nodes that name code (its callbacks, the job's logging handlers): Hydra
builds them before a job starts, so :func:`check_targets` in the job would come too late."""


def refused_hydra_targets(*, _root_) -> list[str]:
    """An OmegaConf resolver (``${mammo.refused_hydra_targets:}``): mammo's one line for each
    untrusted target in :data:`HYDRA_NODES`, read raw (nothing resolved, nothing built)."""
    from omegaconf import OmegaConf

    hydra = _root_.get("hydra") if hasattr(_root_, "get") else None
    if hydra is None:
        return []
    trusted = trusted_targets(Path(__file__).resolve().parents[2] / "conf")
    lines = []
    for node in HYDRA_NODES:
        raw = OmegaConf.to_container(hydra[node], resolve=False) if node in hydra else {}
        for key, target in _keyed_targets(raw, f"hydra.{node}"):
            if not is_trusted(target, trusted):
                lines.append(refused_target(key, target, hydra_origin(hydra, target)))
    return lines


def _keyed_targets(node, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in TARGET_KEYS and isinstance(value, str) and "${" not in value:
                yield where, value
            else:
                yield from _keyed_targets(value, where)


def hydra_origin(hydra, value: str) -> str:
    """Where a value of a composed config was set: the command line, or the first config file of
    the composition that names it (the primary config and each chosen group option)."""
    for override in hydra.overrides.task:
        if value in override:
            return f"the command line ({override})"
    names = [hydra.job.config_name, *(f"{g}/{o}" for g, o in hydra.runtime.choices.items() if o)]
    for source in hydra.runtime.config_sources:
        if source.schema != "file":
            continue
        for name in names:
            path = Path(source.path) / f"{name}.yaml"
            if path.is_file() and value in path.read_text(errors="replace"):
                return str(path)
    return "the composed config"


class TrustedHydraNodes:
    """The first of an entry's ``hydra.callbacks``: built before the other callbacks and the job's
    logging, it stops the command with mammo's one line (key, file, ``MAMMO_TRUSTED_TARGETS``)
    when those name an untrusted target, where Hydra would print its traceback. Nothing runs."""

    def __init__(self, refused: list[str]) -> None:
        if refused:
            sys.stderr.write("".join(f"{line}\n" for line in refused))
            raise SystemExit(1)  # Hydra wraps any exception raised here in a traceback

    def __getattr__(self, name: str):
        if name.startswith("on_"):  # Hydra's callback events: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)
