"""``hydra/sweeper=mammo_optuna``: hydra-optuna-sweeper with resumable study semantics.

The released sweeper (1.3.0) runs ``n_trials`` *more* trials on every launch and gives up on the
first batch whose failure share exceeds ``max_failure_rate``. This subclass keeps its config and
search-space syntax and changes what a researcher resuming a study needs:

* ``n_trials`` is the study's total: a relaunch runs only the trials still missing;
* trials left RUNNING by a killed sweep are marked FAIL on relaunch (the study report, which
  mammo writes when the sweep ends, marks their run directories ``interrupted``); their numbers
  count towards ``n_trials`` (Optuna never reuses a number), their directories are never reused;
* ``max_failure_rate`` is a budget over the whole study: the sweep stops once more than
  ``max_failure_rate * n_trials`` trials have failed (a NaN objective counts as a failure);
* each job gets its trial number as ``hpo.trial=<n>`` (for optuna_trial.json and the run's
  summary) and the SQLite file's folder is created before the study opens;
* ``hydra/sweeper/pruner=<name>`` (``hydra.sweeper.pruner``: any Optuna pruner by ``_target_``)
  prunes from inside the jobs (``mammo.hpo.trial``); a job that raises ``optuna.TrialPruned`` is
  told PRUNED;
* several workers may run the same command against one RDB storage (PostgreSQL, MySQL, SQLite
  on one machine): each asks for its own trials until the study has ``n_trials`` finished or
  running ones. A worker records its host and pid on every trial it runs and a heartbeat every
  ``heartbeat_interval`` seconds; a RUNNING trial is stale (marked FAIL, as above) when its worker
  is a dead process on this host, or its heartbeat is older than ``grace_period`` seconds.
  As with Optuna's own ``MaxTrialsCallback``, workers that ask at the same instant for the last
  slot may overshoot ``n_trials`` by one trial each.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module without
# registering it in sys.modules, and dataclasses then cannot resolve string annotations.
# Keep this module light (no optuna, torch or lightning at module level): Hydra's plugin scan
# imports it on every command line, --help included.
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING


class MammoOptunaSweeper(Sweeper):
    """Hydra's view of the sweeper; the work is done by ``_sweeper.MammoOptunaSweeperImpl``."""

    def __init__(self, *, sampler: Any, pruner: Any = None, **kwargs) -> None:
        from hydra_plugins.mammo_optuna._sweeper import MammoOptunaSweeperImpl

        # Hydra 1.4 hands the sweeper its config un-instantiated, as hydra-optuna-sweeper's own does
        sampler = instantiate(sampler, _execution_whitelist_=("hydra_plugins.*", "optuna.samplers.*"))
        pruner = instantiate(pruner, _execution_whitelist_="optuna.pruners.*") if pruner else None
        self.sweeper = MammoOptunaSweeperImpl(sampler=sampler, pruner=pruner, **kwargs)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)


# The pruner presets (hydra/sweeper/pruner=median|...) are YAML files in mammo's conf/hydra/sweeper/pruner/:
# files cost nothing at start-up, while every ConfigStore node is copied on each group listing of --help.
@dataclass
class MammoOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.mammo_optuna.mammo_optuna_sweeper.MammoOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "nop"}])
    pruner: Any = MISSING  # hydra/sweeper/pruner=median|percentile|threshold|successive_halving|hyperband|nop
    heartbeat_interval: int = 30  # seconds between a worker's heartbeats on its running trials
    # no heartbeat for this long: the trial is stale (default: 2 x heartbeat_interval)
    grace_period: Optional[int] = None  # noqa: UP045 (OmegaConf reads typing.Optional)


ConfigStore.instance().store(
    group="hydra/sweeper", name="mammo_optuna", node=MammoOptunaSweeperConf, provider="mammo"
)
