"""Optuna hyperparameter search, seen from a trial's job (the study runs in the sweeper plugin
``hydra_plugins/mammo_optuna``): the job's trial (``trial``), the callbacks that report to it
(``callbacks``), and the study report written when the sweep ends (``study``)."""
