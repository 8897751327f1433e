"""``hydra/sweeper=mammo_optuna``: hydra-optuna-sweeper with resumable study semantics.

The released sweeper (1.3.0) runs ``n_trials`` *more* trials on every launch and gives up on the
first batch whose failure share exceeds ``max_failure_rate``. This subclass keeps its config and
search-space syntax and changes what a researcher resuming a study needs:

* ``n_trials`` is the study's total: a relaunch runs only the trials still missing;
* trials left RUNNING by a killed sweep are marked FAIL on relaunch, and ``interrupted`` in their
  run directory if the job had started; their numbers count towards ``n_trials`` (Optuna never
  reuses a number), their directories are never reused;
* ``max_failure_rate`` is a budget over the whole study: the sweep stops once more than
  ``max_failure_rate * n_trials`` trials have failed (a NaN objective counts as a failure);
* each job gets its trial number as ``hpo.trial=<n>`` (for optuna_trial.json and the run's
  summary) and the SQLite file's folder is created before the study opens.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module without
# registering it in sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class MammoOptunaSweeper(OptunaSweeperImpl):
    """See the module docstring; single-objective only."""

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        if self.search_space_distributions:
            space = {**self.search_space_distributions, **space}
        for name in fixed:
            space.pop(name, None)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError("hydra/sweeper=mammo_optuna supports one objective")
        _create_sqlite_folder(self.storage)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            direction=directions[0],
            load_if_exists=True,
        )
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_state(stale._trial_id, TrialState.FAIL)
            _mark_interrupted(Path(self.sweep_dir), study.study_name, stale.number)
            log.warning(f"Trial {stale.number} was left running by an earlier sweep: marked FAIL")
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        to_go = max(0, self.n_trials - finished)
        budget = self.max_failure_rate * self.n_trials
        log.info(f"Study {study.study_name} ({self.storage}): {finished} finished, {to_go} more to reach")
        log.info(f"n_trials={self.n_trials}; a failure budget of {budget:g} trials")
        while to_go > 0:
            batch = min(to_go, self.n_jobs)
            trials = [study.ask() for _ in range(batch)]
            overrides = [
                (*params, f"hpo.trial={trial.number}")
                for trial, params in zip(trials, self._configure_trials(trials, space, fixed))
            ]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns):
                try:
                    value = float(ret.return_value)
                    if not math.isfinite(value):
                        raise ValueError(f"objective is {value}")
                    study.tell(trial, value)
                except Exception as exc:  # the job raised, or returned nothing usable
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning(f"Trial {trial.number} failed: {type(exc).__name__}: {exc}")
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if failed > budget:
                raise RuntimeError(
                    f"{failed} failed trials exceed max_failure_rate={self.max_failure_rate} "
                    f"of n_trials={self.n_trials}; see the trials' summary.json files"
                )
            to_go -= batch
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if completed:
            log.info(f"Best trial {study.best_trial.number}: {study.best_value} with {study.best_params}")


def _mark_interrupted(hpo_dir: Path, study_name: str, number: int) -> None:
    """Record in a killed trial's run directory (if its job got that far) that it was interrupted."""
    import json

    from mammo.artifacts.io import write_json

    for record_file in hpo_dir.glob("results_*/optuna_trial.json"):
        record = json.loads(record_file.read_text())
        if record.get("study_name") != study_name or record.get("trial_number") != number:
            continue
        record.update(state="FAIL", reason="interrupted: the sweep stopped while this trial ran")
        write_json(record_file, record)
        summary_file = record_file.parent / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            if summary.get("status") == "running":
                summary["status"] = "interrupted"
                write_json(summary_file, summary)


def _create_sqlite_folder(storage) -> None:
    url = str(storage or "")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@dataclass
class MammoOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mammo_optuna.mammo_optuna_sweeper.MammoOptunaSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="mammo_optuna", node=MammoOptunaSweeperConf, provider="mammo"
)
