"""distill: a config-driven reasoning-distillation pipeline (generate → curate → train → eval → export)."""

__version__ = "0.1.0"
