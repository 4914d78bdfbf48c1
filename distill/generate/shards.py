"""Generate shards in parallel worker processes on one node, one engine (and its own GPUs) per worker.

A vLLM engine owns its GPUs, so data parallelism on a node is several engines: the driver writes the
resolved config once, and each worker (a plain Python process, no Hydra) runs one shard at a time with
`CUDA_VISIBLE_DEVICES` set to its own group of `tensor_parallel_size` GPUs. A worker is the same command a
Slurm array task runs (`python -m distill.cluster.job run --shard N`): one code path for both.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from distill.core.paths import Paths
from distill.core.workers import run_workers


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
    worker_cfg = cfg.copy()
    worker_cfg.force = False  # the driver already cleared what force=true discards
    groups = _gpu_groups(workers, cfg.stage.engine.tensor_parallel_size)
    env = lambda slot: {} if groups[slot] is None else {"CUDA_VISIBLE_DEVICES": groups[slot]}  # noqa: E731
    run_workers(worker_cfg, paths, paths.stage_dir("generate"), shards, workers, env)
