"""The Optuna adapter (mammo.hpo.optuna_api): a trial asked elsewhere, reached by its number."""

from __future__ import annotations

import optuna

from mammo.hpo.optuna_api import running_trial, storage_trial_id


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
