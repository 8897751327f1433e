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


def learning_rates(optimizers: list) -> dict[str, float]:
    """The history's learning-rate columns, read before an epoch trains (an epoch scheduler steps
    after the epoch's end hooks): ``lr``, the first parameter group's, and ``lr_<name>`` for each
    other group whose rate differs from it (``name``: the group's, else its index).

    >>> w = [torch.zeros(1, requires_grad=True) for _ in range(3)]
    >>> opt = torch.optim.SGD([{"params": w[:1], "name": "head"}, {"params": w[1:2], "lr": 0.1,
    ...     "name": "backbone"}, {"params": w[2:]}], lr=1.0)
    >>> learning_rates([opt])
    {'lr': 1.0, 'lr_backbone': 0.1}
    >>> learning_rates([])
    {}
    """
    if not optimizers:
        return {}
    groups = optimizers[0].param_groups
    first = float(groups[0]["lr"])
    rates = {"lr": first}
    for index, group in enumerate(groups[1:], start=1):
        if float(group["lr"]) != first:
            rates[f"lr_{group.get('name', index)}"] = float(group["lr"])
    return rates
