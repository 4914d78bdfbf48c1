"""Stage 4, eval: teacher, base student and every phase on held-out problems, sampled and verified the
way generate and curate do it (`python -m distill stage=eval`).
"""
