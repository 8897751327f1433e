"""Where a run came from: git state of the mammo source tree and the software environment."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path

_SOURCE_DIR = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(_SOURCE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_info() -> dict:
    """``git_commit`` (7 hex), ``git_branch`` and ``git_dirty`` of the code that runs.

    Untracked files do not count as dirty; modified tracked files do. Outside a git checkout
    all three are ``None``.
    """
    commit = _git("rev-parse", "--short=7", "HEAD")
    if not commit:
        return {"git_commit": None, "git_branch": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": commit[:7],
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_dirty": bool(status),
    }


def environment_info() -> dict:
    """Python, library and hardware facts needed to reproduce a run."""
    import lightning
    import timm
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "lightning_version": lightning.__version__,
        "timm_version": timm.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    """The command as typed: ``python -m mammo.train a=b ...``."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        module = Path(argv[0]).with_suffix("").name
        argv[0] = f"python -m mammo.{module}" if (Path(argv[0]).parent.name == "mammo") else argv[0]
    return " ".join(argv)
