"""What every layer shares: mammo's errors and their one-line reports (``errors``), the stop
request of a signal (``interrupts``), the targets a config may name (``targets``) and the checks
of a training run's settings (``train_settings``)."""
