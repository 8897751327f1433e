"""Which process of a distributed job this is (read from the launchers' environment variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping

# the variables through which launchers tell a process its place; absent means zero
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is global rank zero (the only one that writes run artifacts).

    >>> is_rank_zero({})
    True
    >>> is_rank_zero({"LOCAL_RANK": "0", "NODE_RANK": "1"})
    False
    >>> is_rank_zero({"SLURM_PROCID": "3"})
    False
    """
    return all(int(env.get(name) or 0) == 0 for name in RANK_VARIABLES)
