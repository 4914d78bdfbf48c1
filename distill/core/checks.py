"""Range checks of config values, run by the driver on every stage's resolved config before any stage runs.

OmegaConf checks types; it cannot know that `sampling.n=0` divides by zero in generate's progress, that
`num_shards=0` merges nothing, or that `chunk_problems=0` never finishes. Checking every stage of a
pipeline up front means a bad value in export fails in a second, not after hours of generate and train.
One table for all stages (stage packages keep their schemas; the bounds live here so the driver and the
Slurm job runner check the same things without importing stage code).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

INF = float("inf")
# (dotted key under `stage`, low, high, low inclusive, may be null); high is always inclusive.
Rule = tuple[str, float, float, bool, bool]
_SAMPLING: list[Rule] = [
    ("sampling.n", 1, INF, True, False),
    ("sampling.max_tokens", 1, INF, True, False),
    ("sampling.temperature", 0, INF, True, False),
    ("sampling.top_p", 0, 1, False, False),
    ("chunk_problems", 1, INF, True, False),
    ("engine.tensor_parallel_size", 1, INF, True, False),
    ("engine.gpu_memory_utilization", 0, 1, False, False),
    ("engine.concurrency", 1, INF, True, False),
    ("engine.max_retries", 0, INF, True, False),
    ("engine.backoff_s", 0, INF, True, False),
    ("engine.timeout_s", 0, INF, False, False),
    ("engine.max_model_len", 1, INF, True, True),
]
_TRAIN_HPARAMS: list[Rule] = [
    ("epochs", 0, INF, False, False),
    ("lr", 0, INF, True, False),  # lr 0 is a frozen run: what the tests use to prove where a phase starts
    ("max_length", 1, INF, True, False),
    ("per_device_batch_size", 1, INF, True, False),
    ("grad_accum", 1, INF, True, False),
]
RANGES: dict[str, list[Rule]] = {
    "generate": [
        *_SAMPLING,
        ("num_shards", 1, INF, True, False),
        ("workers", 1, INF, True, False),
        ("shard", 0, INF, True, True),
    ],
    "eval": [*_SAMPLING, ("num_workers", 0, INF, True, True)],
    "curate": [
        ("val_fraction", 0, 1, True, False),
        ("dedup.near_threshold", 0, 1, False, False),
        ("dedup.num_perm", 1, INF, True, False),
        ("dedup.shingle", 1, INF, True, False),
        ("dedup.max_per_problem", 1, INF, True, True),
        ("filters.min_completion_tokens", 0, INF, True, False),
        ("filters.max_completion_tokens", 1, INF, True, True),
        ("filters.repetition_ngram", 1, INF, True, False),
        ("filters.max_repetition", 0, 1, True, True),
        ("decontam.ngram", 1, INF, True, False),
        ("verify.num_workers", 0, INF, True, True),
        ("verify.parse_timeout_s", 1, INF, True, False),
        ("verify.verify_timeout_s", 1, INF, True, False),
    ],
    "train": [
        *_TRAIN_HPARAMS,
        ("num_processes", 1, INF, True, False),
        ("num_machines", 1, INF, True, False),
        ("threads_per_rank", 1, INF, True, False),
        ("min_lr_rate", 0, 1, True, False),
        ("warmup_ratio", 0, 1, True, False),
        ("weight_decay", 0, INF, True, False),
        ("max_grad_norm", 0, INF, False, False),
        ("logging_steps", 1, INF, True, False),
        ("save_steps", 1, INF, True, False),
        ("save_total_limit", 1, INF, True, True),
    ],
    "export": [("max_model_len", 1, INF, True, False), ("route_margin", 0, INF, True, False)],
}


def _get(node: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(node, (dict, DictConfig)) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _how(where: str) -> str:
    """How to set a stage value: `stage.<key>` with `stage=<name>`, or `stages.<name>.<key>` in a pipeline."""
    name, _, key = where.partition(".")
    if name in RANGES:
        return f" (set stage.{key} with stage={name}, or stages.{name}.{key})"
    return ""


def _check(value: Any, rule: Rule, where: str) -> None:
    _, lo, hi, lo_incl, nullable = rule
    if value is None:
        if not nullable:
            raise ValueError(f"{where}=null: a value is required")
        return
    ok = (value >= lo if lo_incl else value > lo) and value <= hi
    if not ok:
        low = f">= {lo}" if lo_incl else f"> {lo}"
        want = low if hi == INF else f"{low} and <= {hi}"
        raise ValueError(f"{where}={value}: must be {want}{_how(where)}")


def check_stage(cfg: DictConfig) -> None:
    """Every bounded value of the resolved `cfg.stage` (and `per_phase` overrides, and the run's problem
    sources' `limit`), named `<stage>.<key>` in the message with the two ways to set it."""
    g, name = cfg.stage, cfg.stage.name
    for rule in RANGES.get(name, []):
        found, value = _get(g, rule[0])
        if found:
            _check(value, rule, f"{name}.{rule[0]}")
    if name == "generate" and g.shard is not None and g.shard >= g.num_shards:
        raise ValueError(
            f"generate: stage.shard={g.shard} is outside 0..{g.num_shards - 1} (stage.num_shards)"
        )
    for phase, over in (g.get("per_phase") or {}).items() if name == "train" else ():
        for rule in _TRAIN_HPARAMS:
            found, value = _get(over, rule[0])
            if found and value is not None:
                _check(value, rule, f"train.per_phase.{phase}.{rule[0]}")
    for src_name, src in (cfg.get("data") or {}).items():
        if src.get("limit") is not None:
            _check(src.limit, ("limit", 1, INF, True, True), f"data.{src_name}.limit")
