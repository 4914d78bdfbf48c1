"""Local worker processes for a stage's shards: the same command a Slurm array task runs, on one node.

A worker is `python -m distill.cluster.job run --config <resolved yaml> --shard N`: a plain Python process
(no Hydra) running the stage function on one shard, so local workers and array tasks share one code path.
The driver writes the resolved config once (secrets scrubbed: workers read keys from the environment)
and keeps `workers` processes busy until every shard is done; a failed worker is named with its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_text
from distill.core.paths import Paths
from distill.core.secrets import scrub_config


def run_workers(
    worker_cfg: DictConfig,
    paths: Paths,
    out: Path,
    shards: list[int],
    workers: int,
    env_for: Callable[[int], dict[str, str]] = lambda slot: {},
) -> None:
    """Runs `shards` over `workers` processes; `env_for(slot)` adds a slot's environment (its GPUs)."""
    cfg_file = out / "worker_config.yaml"
    atomic_write_text(cfg_file, OmegaConf.to_yaml(scrub_config(worker_cfg, str(cfg_file))))
    pending, running, failed = list(shards), {}, []
    while pending or running:
        for slot in [s for s in range(workers) if s not in running]:
            if not pending:
                break
            shard = pending.pop(0)
            log = open(out / f"worker-shard-{shard:05d}.log", "wb")  # noqa: SIM115 (closed below)
            cmd = [sys.executable, "-m", "distill.cluster.job", "run", "--config", str(cfg_file),
                   "--shard", str(shard), "--base", str(paths.base)]  # fmt: skip
            env = dict(os.environ) | env_for(slot)
            running[slot] = (shard, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(0.2)
        for slot, (shard, proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[slot]
                if proc.returncode != 0:
                    failed.append(f"shard {shard} (exit {proc.returncode}, log {log.name})")
    if failed:
        raise RuntimeError(f"{worker_cfg.stage.name} workers failed: " + "; ".join(failed))
