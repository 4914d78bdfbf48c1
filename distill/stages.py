"""The stage registry: name -> module. Each module defines `Config` (its typed schema) and `run(cfg, paths)`.

Keeping the list here (and the modules lazy) lets `python -m distill stage=curate` start without importing
vLLM or DeepSpeed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

STAGE_MODULES: dict[str, str] = {
    "generate": "distill.generate",
    "curate": "distill.curate",
    "train": "distill.train",
    "eval": "distill.eval",
    "export": "distill.export",
}
STAGES = tuple(STAGE_MODULES)


def stage_module(name: str) -> ModuleType:
    if name not in STAGE_MODULES:
        raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    return importlib.import_module(STAGE_MODULES[name])


def stage_schemas() -> dict[str, type]:
    return {name: stage_module(name).Config for name in STAGES}


def stage_runner(name: str) -> Callable:
    return stage_module(name).run
