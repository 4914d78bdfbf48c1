"""Stage 3, train: curriculum SFT of the student, one phase after another, with TRL + accelerate +
DeepSpeed ranks started by the driver (`python -m distill stage=train`).
"""
