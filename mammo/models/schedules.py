"""Learning-rate schedules that need more than one of torch's classes (``conf/scheduler/``)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int) -> LRScheduler:
    """Per-epoch factor: linear warm-up to 1 over ``warmup_epochs``, then cosine decay towards 0
    over the remaining epochs (``SequentialLR(LinearLR, CosineAnnealingLR)``).

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> schedule, factors = warmup_cosine(opt, 2, 6), []
    >>> for _ in range(6):
    ...     factors.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     schedule.step()
    >>> factors
    [0.333, 0.667, 1.0, 0.854, 0.5, 0.146]
    """
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup_epochs))
    if warmup_epochs <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / (warmup_epochs + 1), total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
