"""What a job does, wrapped outside-in: ``job`` (one Hydra job: resume, HPO trial, DDP cleanup)
→ ``folds`` (all CV folds in one job) → ``fit`` (one training run, in named steps built from
``components``). ``sweep`` is the Hydra callback that aggregates a multirun when it ends."""
