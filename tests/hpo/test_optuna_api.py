"""The Optuna adapter (mammo.hpo.optuna_api): a trial asked elsewhere, reached by its number; a
sampler reseeded per trial."""

from __future__ import annotations

import optuna
import pytest

from mammo.hpo.optuna_api import reseed_sampler, running_trial, storage_trial_id


def test_a_job_reaches_the_trial_the_sweeper_asked_for(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    sweeper = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    asked = [sweeper.ask(), sweeper.ask()]
    job_study = optuna.load_study(study_name="s", storage=storage, pruner=optuna.pruners.NopPruner())
    trial = running_trial(job_study, 1)
    trial.report(0.5, step=0)
    assert trial.number == 1 and storage_trial_id(trial) == storage_trial_id(asked[1])
    trials = optuna.load_study(study_name="s", storage=storage).trials  # as a third process sees it
    assert trials[1].intermediate_values == {0: 0.5} and trials[0].intermediate_values == {}


def proposals(sampler, base: int, number: int) -> list[float]:
    """The first values ``sampler`` proposes for a fresh study once reseeded from (base, number)."""
    reseed_sampler(sampler, base, number)
    study = optuna.create_study(sampler=sampler)
    return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]


@pytest.mark.parametrize("make", [optuna.samplers.TPESampler, optuna.samplers.RandomSampler])
def test_a_reseeded_sampler_proposes_what_its_seed_and_trial_number_say(make):
    assert reseed_sampler(make(seed=1), 0, 0) >= 1  # fails when Optuna stops keeping NumPy states
    same = [proposals(make(seed=s), 7, 3) for s in (1, 2)]
    assert same[0] == same[1]  # the sampler's own seed no longer decides: (base, number) does
    assert proposals(make(), 7, 4) != same[0] and proposals(make(), 8, 3) != same[0]


def test_a_study_scored_on_one_metric_refuses_another():
    """Continuing a study with another ``monitor`` would rank val_kappa trials against
    val_macro_f1 ones: one line says how to give the search its own study."""
    from hydra_plugins.mammo_optuna._sweeper import name_the_objective
    from mammo.core.errors import ConfigError

    study = optuna.create_study(study_name="s", direction="maximize")
    name_the_objective(study, "val_kappa")
    name_the_objective(study, "val_macro_f1")  # no trial yet: renamed
    assert study.metric_names == ["val_macro_f1"]
    study.add_trial(optuna.trial.create_trial(value=0.5))
    name_the_objective(study, "val_macro_f1")  # the same metric goes on
    with pytest.raises(ConfigError, match="holds trials scored on val_macro_f1.*hydra.sweeper.study_name"):
        name_the_objective(study, "val_kappa")
    assert study.metric_names == ["val_macro_f1"]
