"""Collectives over the torch.distributed group of a DDP job (identities outside one)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world_size() -> int:
    """Processes in the torch.distributed group this process is in (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_unique(rows, *tensors):
    """All ranks' ``rows`` (dataset row labels) and per-row ``tensors``, each row once.

    ``DistributedSampler`` pads the last shard with repeated rows so that every rank gets the same
    number; those repeats are dropped here. Outside a process group this returns its inputs. Every
    rank gets the same result, sorted by row, so metrics computed from it agree across ranks.
    ``None`` entries in ``tensors`` stay ``None``.
    """
    if _world_size() == 1:
        return (rows, *tensors)
    local = [rows.cpu(), *(None if t is None else t.cpu() for t in tensors)]
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    all_rows = torch.cat([p[0] for p in parts])
    order = torch.argsort(all_rows, stable=True)
    sorted_rows = all_rows[order]
    first = torch.ones_like(sorted_rows, dtype=torch.bool)
    first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    keep = order[first]
    out = [all_rows[keep]]
    for i, tensor in enumerate(tensors, start=1):
        out.append(None if tensor is None else torch.cat([p[i] for p in parts])[keep].to(tensor.device))
    return tuple(out)


def broadcast_from_rank_zero(value):
    """Rank zero's ``value`` on every rank of the process group (``value`` itself outside one)."""
    if _world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
