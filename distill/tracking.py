"""W&B tracking shared by the stages: offline unless configured, grouped by run, never a secret.

Files go under the run directory (`<run>/wandb/`), so a run's tracking data travels with its outputs and
an offline run can be synced later with `wandb sync <run>/wandb/offline-run-*`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from distill.paths import Paths

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password)", re.I)


def scrub(obj: Any) -> Any:
    """Drops every value whose key looks like a credential (names of env vars are kept: they are not keys)."""
    if isinstance(obj, dict):
        return {
            k: scrub(v)
            for k, v in obj.items()
            if not (SECRET_KEY.search(str(k)) and not str(k).endswith("_env"))
        }
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


@contextmanager
def wandb_run(cfg: DictConfig, paths: Paths, job: str, config: dict | None = None) -> Iterator[Any]:
    """A W&B run named `<run>-<job>` in group `<run>`; yields None when tracking is disabled."""
    w = cfg.wandb
    if not w.enabled or w.mode == "disabled":
        yield None
        return
    import wandb

    paths.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=cfg.run.name,
        name=f"{cfg.run.name}-{job}",
        job_type=job,
        tags=list(w.tags),
        mode=w.mode,
        dir=str(paths.run_dir),
        config=scrub(config or {}),
        reinit="finish_previous",
    )
    try:
        yield run
    finally:
        run.finish()
