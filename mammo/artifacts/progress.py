"""The Rich progress bar with run.log's epoch counter (``Epoch 8/8``: one-based, of ``max_epochs``).

Lightning's ``RichProgressBar`` counts epochs from zero (``Epoch 7/7`` for the last of 8), while
run.log, summary.json and ``train_history`` count from one. The bar keeps Lightning's tasks and
changes only how their description is drawn, through its public ``configure_columns``: each task
is drawn with its own epoch, so a bar left on screen (``leave=True``) keeps its number.
"""

from __future__ import annotations

import re

from lightning.pytorch.callbacks import RichProgressBar
from rich.progress import ProgressColumn, Task
from rich.text import Text

ZERO_BASED_EPOCH = re.compile(r"\bEpoch (\d+)(?:/(\d+))?")


def one_based(description: str) -> str:
    """Lightning's ``Epoch e/m`` (zero-based) as ``Epoch e+1/m+1``, padded to the same width.

    >>> one_based("Epoch 7/7 "), one_based("Epoch 9/9 "), one_based("Epoch 0"), one_based("Validation")
    ('Epoch 8/8 ', 'Epoch 10/10', 'Epoch 1', 'Validation')
    """

    def count_from_one(match: re.Match) -> str:
        epoch, last = match.groups()
        return f"Epoch {int(epoch) + 1}" + (f"/{int(last) + 1}" if last is not None else "")

    renumbered = ZERO_BASED_EPOCH.sub(count_from_one, description)
    return description if renumbered == description else renumbered.rstrip().ljust(len(description))


class OneBasedDescriptionColumn(ProgressColumn):
    """Rich's description column (``[progress.description]{task.description}``), epochs from one."""

    def render(self, task: Task) -> Text:
        return Text.from_markup(f"[progress.description]{one_based(task.description)}")


class EpochProgressBar(RichProgressBar):
    """``RichProgressBar`` whose training task reads ``Epoch N/max_epochs``, counted from one."""

    def configure_columns(self, trainer) -> list:
        return [OneBasedDescriptionColumn(), *super().configure_columns(trainer)[1:]]
