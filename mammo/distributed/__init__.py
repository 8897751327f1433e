"""Distributed data parallel training under Hydra: which process writes, where the ranks meet.

Every rank of a DDP job runs the same Hydra task. Only global rank zero writes the run directory
(``ranks.is_rank_zero``); all ranks must agree on that directory:

* Lightning starts the other ranks itself (``trainer=ddp`` / ``ddp_cpu`` on one machine):
  ``launcher.ddp_strategy`` re-runs the job's own overrides (not the whole ``-m`` sweep, as Lightning's
  launcher would) with ``hydra.run.dir`` set to rank zero's directory.
* The cluster starts every rank (SLURM ``srun``, ``torchrun``): each rank resolves
  ``hydra.run.dir`` itself, so ``claims.shared_run_dir`` lets rank zero allocate ``results_N`` and
  hands its name to the other ranks through a claim file keyed by the job's identity.

Validation outputs are gathered from all ranks and de-duplicated by dataset row
(``collectives.gather_unique``), so metrics and ``val_predictions.csv`` cover the validation split once.
"""
