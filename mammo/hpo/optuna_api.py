"""The one place mammo reaches into Optuna beyond its public API.

A trial's job continues the trial the sweeper asked for (to report intermediate values and ask
the pruner), and Optuna has no public way to get a :class:`optuna.trial.Trial` for an existing
trial number; the sweeper seeds each trial's sampling from (seed, trial number), and Optuna has no
public way to reseed a sampler. ``tests/hpo/test_optuna_api.py`` fails loudly when an Optuna
release changes either.
"""

from __future__ import annotations

import numpy as np
import optuna


def running_trial(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """The live :class:`~optuna.trial.Trial` of ``study`` numbered ``number`` (asked elsewhere)."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def storage_trial_id(trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (what the storage's heartbeat and state calls take)."""
    return trial._trial_id


def reseed_sampler(sampler: optuna.samplers.BaseSampler, base: int, number: int) -> int:
    """Seed every NumPy random state of ``sampler`` (and of the samplers it holds, e.g. TPE's
    start-up random sampler) from ``(base, number)``: a study is as reproducible as with one seed,
    and parallel workers propose different trials. Optuna 4+ keeps each state behind a lazy
    holder's ``rng``. Returns how many states were reseeded."""
    return _reseed(sampler, base, number, 0)


def _reseed(sampler, base: int, number: int, depth: int) -> int:
    reseeded = 0
    for name, value in vars(sampler).items():
        seed = np.random.SeedSequence([base, number, depth]).generate_state(1)[0]
        if isinstance(value, np.random.RandomState):
            setattr(sampler, name, np.random.RandomState(seed))
            reseeded += 1
        elif isinstance(getattr(value, "rng", None), np.random.RandomState):
            value.rng.seed(seed)
            reseeded += 1
        elif isinstance(value, optuna.samplers.BaseSampler) and depth < 3:
            reseeded += _reseed(value, base, number, depth + 1)
    return reseeded
