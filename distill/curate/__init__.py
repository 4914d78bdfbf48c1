"""Stage 2, curate: verify, filter, dedup and decontaminate teacher samples, measure difficulty, and write
each curriculum phase with a funnel (`python -m distill stage=curate`).
"""
