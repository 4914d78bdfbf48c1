"""The builder of data/toy/ in parts (problems, tokenizer, models, checks, the harmony teacher); the entry
point is scripts/build_toy_world.py."""
