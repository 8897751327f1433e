"""The one place mammo reaches into Optuna beyond its public API.

A trial's job continues the trial the sweeper asked for (to report intermediate values and ask
the pruner), and Optuna has no public way to get a :class:`optuna.trial.Trial` for an existing
trial number; ``tests/hpo/test_optuna_api.py`` fails loudly when an Optuna release changes this.
"""

from __future__ import annotations

import optuna


def running_trial(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """The live :class:`~optuna.trial.Trial` of ``study`` numbered ``number`` (asked elsewhere)."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def storage_trial_id(trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (what the storage's heartbeat and state calls take)."""
    return trial._trial_id
