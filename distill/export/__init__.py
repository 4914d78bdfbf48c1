"""Stage 5, export: the serving-tier bundle and the router's commodity-tier entry
(`python -m distill stage=export`).
"""
