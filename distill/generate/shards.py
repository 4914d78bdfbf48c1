"""Generate shards in parallel worker processes on one node, one engine (and its own GPUs) per worker.

A vLLM engine owns its GPUs, so data parallelism on a node is several engines: the driver writes the
resolved config once, and each worker (a plain Python process, no Hydra) runs one shard at a time with
`CUDA_VISIBLE_DEVICES` set to its own group of `tensor_parallel_size` GPUs. A worker is the same command a
Slurm array task runs (`python -m distill.cluster.job run --shard N`): one code path for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_text
from distill.core.paths import Paths
from distill.core.secrets import scrub_config


def _gpu_groups(workers: int, tp: int) -> list[str | None]:
    """Visible GPU ids split into `workers` groups of `tp`; None for every worker on a machine without GPUs."""
    import torch

    if not torch.cuda.is_available():
        return [None] * workers
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = env.split(",") if env else [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) < workers * tp:
        raise ValueError(
            f"generate.workers={workers} x tensor_parallel_size={tp} needs {workers * tp} GPUs, {len(ids)} visible"
        )
    return [",".join(ids[i * tp : (i + 1) * tp]) for i in range(workers)]


def run_local_shards(cfg: DictConfig, paths: Paths, shards: list[int], workers: int) -> None:
    out = paths.stage_dir("generate")
    cfg_file = out / "worker_config.yaml"
    worker_cfg = cfg.copy()
    worker_cfg.force = False  # the driver already cleared what force=true discards
    atomic_write_text(cfg_file, OmegaConf.to_yaml(scrub_config(worker_cfg, str(cfg_file))))
    groups = _gpu_groups(workers, cfg.stage.engine.tensor_parallel_size)
    pending, running, failed = list(shards), {}, []
    while pending or running:
        for slot in [s for s in range(workers) if s not in running]:
            if not pending:
                break
            shard = pending.pop(0)
            env = dict(os.environ)
            if groups[slot] is not None:
                env["CUDA_VISIBLE_DEVICES"] = groups[slot]
            log = open(out / f"worker-shard-{shard:05d}.log", "wb")  # noqa: SIM115 (closed below)
            cmd = [sys.executable, "-m", "distill.cluster.job", "run", "--config", str(cfg_file),
                   "--shard", str(shard), "--base", str(paths.base)]  # fmt: skip
            running[slot] = (shard, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(0.2)
        for slot, (shard, proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[slot]
                if proc.returncode != 0:
                    failed.append(f"shard {shard} (exit {proc.returncode}, log {log.name})")
    if failed:
        raise RuntimeError("generate workers failed: " + "; ".join(failed))
