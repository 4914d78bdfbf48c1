"""Stage 1, generate: n teacher samples per problem, sharded over processes, GPUs and Slurm array tasks,
resumable after SIGKILL with nothing lost or duplicated (`python -m distill stage=generate`).
"""
