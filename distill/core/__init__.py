"""Shared by every stage and imported by none of them upward: config sections, paths, row I/O and
schemas, manifests and keys, W&B tracking, progress and tables. Nothing here imports a stage or cluster code.
"""
