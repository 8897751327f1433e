SLURM_JOB = {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}
"""The environment of a two-task SLURM job step, as srun gives each task (plus its SLURM_PROCID)."""
