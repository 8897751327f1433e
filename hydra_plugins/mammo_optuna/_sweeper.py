"""The implementation of ``hydra/sweeper=mammo_optuna`` (see ``mammo_optuna_sweeper.py``).

Its name starts with an underscore so that Hydra's plugin scan, which imports every other module
under ``hydra_plugins/`` on every command line (``--help`` included), skips it: it imports Optuna,
which takes seconds. The sweeper class imports it when a sweep is set up.

It subclasses hydra-optuna-sweeper's ``OptunaSweeperImpl`` (the released plugin has no public
extension point; ``tests/hpo/test_plugin_api.py`` fails loudly when a release changes what is used
here) and reaches Optuna's trial ids through ``mammo.hpo.optuna_api``. It never touches a run
directory: each trial's job records its own result, and the study report
(``mammo.hpo.study``) marks the trials a killed sweep left running.
"""

import logging
import math
import os
import socket
import threading
import warnings

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.trial import TrialState

from mammo.core.errors import ConfigError
from mammo.hpo.optuna_api import reseed_sampler, storage_trial_id
from mammo.hpo.storage import has_heartbeats, one_worker_at_a_time, open_storage

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
WORKER_ATTR = "mammo:worker"  # "<host>:<pid>" of the sweep process that runs the trial


class MammoOptunaSweeperImpl(OptunaSweeperImpl):
    """See ``mammo_optuna_sweeper``'s docstring; single-objective only."""

    def __init__(
        self,
        *args,
        heartbeat_interval: int = 30,
        grace_period: int | None = None,
        pruner=None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pruner = pruner  # the jobs instantiate their own from the config and ask it (mammo.hpo.trial)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space, fixed, fixed_overrides = create_params_from_overrides(
            [*self._parse_sweeper_params_config(), *arguments]
        )
        for name in fixed:
            space.pop(name, None)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError("hydra/sweeper=mammo_optuna supports one objective")
        storage = self._open_storage()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=directions[0],
            load_if_exists=True,
        )
        name_the_objective(study, self.config.get("monitor") if self.config is not None else None)
        budget = self.max_failure_rate * self.n_trials
        log.info(f"Study {study.study_name} ({self.storage}), worker {self.worker}")
        log.info(f"n_trials={self.n_trials} in the study; a failure budget of {budget:g} trials")
        while True:
            with one_worker_at_a_time(self.storage, study.study_name):  # no worker overshoots n_trials
                trials = self._claim_trials(study, storage)
            if not trials:
                break
            overrides = [
                (*params, f"hpo.trial={trial.number}")
                for trial, params in zip(
                    trials, self._configure_trials(trials, space, fixed, fixed_overrides)
                )
            ]
            with _Heartbeat(storage, [storage_trial_id(t) for t in trials]):
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns):
                _tell(study, trial, ret)
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if failed > budget:
                raise RuntimeError(
                    f"{failed} failed trials exceed max_failure_rate={self.max_failure_rate} "
                    f"of n_trials={self.n_trials}; see the trials' summary.json files"
                )
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if completed:
            log.info(f"Best trial {study.best_trial.number}: {study.best_value} with {study.best_params}")

    def _claim_trials(self, study, storage) -> list:
        """Up to ``n_jobs`` new trials for this worker, none once the study has ``n_trials``
        finished or running ones (stale ones marked FAIL first)."""
        self._fail_stale(study, storage)
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        to_go = self.n_trials - finished - running
        log.info(
            f"{study.study_name}: {finished} finished, {running} running elsewhere, {max(0, to_go)} to go"
        )
        if to_go <= 0:
            return []
        with warnings.catch_warnings():  # Optuna beats only in optimize(); _Heartbeat beats here
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
        for trial in trials:
            trial.set_user_attr(WORKER_ATTR, self.worker)
        return trials

    def _configure_trials(self, trials, search_space_distributions, fixed_params, fixed_overrides):
        """Sample each trial with the sampler's random state seeded from (``sampler.seed``, trial
        number): a study is as reproducible as before, and parallel workers, which would
        otherwise draw the same sequence from the same seed, propose different trials."""
        base = (self.config.hydra.sweeper.get("sampler") or {}).get("seed") if self.config else None
        overrides = []
        for trial in trials:
            if base is not None:
                reseed_sampler(self.sampler, int(base), trial.number)
            overrides += super()._configure_trials(
                [trial], search_space_distributions, fixed_params, fixed_overrides
            )
        return overrides

    def _open_storage(self):
        """The study's storage (``mammo.hpo.storage``), with heartbeats where it keeps them."""
        return open_storage(self.storage, self.heartbeat_interval, self.grace_period)

    def _fail_stale(self, study, storage) -> None:
        """Mark FAIL the RUNNING trials whose worker is gone (see the module docstring)."""
        if not isinstance(storage, optuna.storages.BaseStorage):
            return  # in memory: only this process's trials
        stale = []
        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER_ATTR, trial.system_attrs.get(WORKER_ATTR))
            if worker is None:  # from a sweep without worker records: nobody can still run it
                stale.append(trial)
                continue
            worker_host, _, pid = worker.rpartition(":")
            if worker_host == host and not _alive(int(pid)):
                stale.append(trial)
        for trial in stale:
            _fail(storage, trial)
        if has_heartbeats(storage):  # other hosts: no heartbeat within the grace period
            running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            with warnings.catch_warnings():  # experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            stale += [
                t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running
            ]
        for trial in stale:
            log.warning(f"Trial {trial.number} was left running by a sweep that is gone: marked FAIL")


def _fail(storage, trial) -> None:
    """Mark a RUNNING trial FAIL, unless another worker finished it first."""
    try:
        storage.set_trial_state_values(storage_trial_id(trial), TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _tell(study, trial, ret) -> None:
    """Record a trial's job outcome in the study: its objective, PRUNED, or FAIL."""
    try:
        value = float(ret.return_value)  # re-raises the job's exception
        if not math.isfinite(value):
            raise ValueError(f"objective is {value}")
        study.tell(trial, value)
    except optuna.TrialPruned as exc:  # the job's pruner stopped it (mammo.hpo.trial)
        study.tell(trial, state=TrialState.PRUNED)
        log.info(f"Trial {trial.number} pruned: {exc}")
    except Exception as exc:  # the job raised, or returned nothing usable
        study.tell(trial, state=TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {type(exc).__name__}: {exc}")


class _Heartbeat:
    """Record the trials' heartbeats every ``heartbeat_interval`` seconds while they run."""

    def __init__(self, storage, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="mammo-optuna-heartbeat")

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a busy database: the next beat will do
                    log.debug(f"heartbeat of trial {trial_id} failed: {exc}")
            if self.stop.wait(interval):
                return

    def __enter__(self):
        if has_heartbeats(self.storage):
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def name_the_objective(study, monitor: str | None) -> None:
    """The study's objective named after the monitored metric (``val_kappa``), which
    optuna-dashboard and Optuna's plots show instead of "Objective 0". A study whose finished
    trials were scored on another metric is refused in one line: its trials and the new ones
    would be ranked against each other on two different scales."""
    named = study.metric_names
    if monitor and named and named != [str(monitor)]:
        if any(trial.state.is_finished() for trial in study.get_trials(deepcopy=False)):
            raise ConfigError(
                f"monitor={monitor}: the study {study.study_name} holds trials scored on {named[0]}, "
                "and one study ranks its trials on one metric; give this search its own study "
                f"(hydra.sweeper.study_name=<name>) or keep monitor={named[0]}"
            )
    if monitor and named != [str(monitor)]:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([str(monitor)])
