"""mammo's Hydra sweeper plugin (``hydra/sweeper=mammo_optuna``), found by Hydra's plugin discovery."""
