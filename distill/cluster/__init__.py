"""Where stages run: the cluster schema, the rank launcher (accelerate, srun), Slurm submission, and the
job runner that Slurm jobs and local generate workers execute (no Hydra in jobs).
"""
