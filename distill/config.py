"""Typed config schemas, registered in Hydra's ConfigStore.

Values live in `conf/*.yaml`; these dataclasses only fix the shape and types so that a typo in a key or a
wrong type fails at composition time with the key's name, not deep inside a stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from distill.slurm import ClusterConfig

DEFAULT_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclass
class RunConfig:
    name: str = "toy"
    # Relative paths are taken from the directory `python -m distill` was started in.
    root: str = "runs"


@dataclass
class ProblemSource:
    """Where problems come from: a local jsonl/parquet `path`, or a Hugging Face `dataset` name."""

    path: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str = "train"
    revision: str | None = None
    id_col: str | None = "id"
    problem_col: str = "problem"
    answer_col: str | None = "answer"
    limit: int | None = None


@dataclass
class ModelRef:
    """A model the pipeline talks to: a local directory, a hub id, or a name served behind an endpoint."""

    name: str = "toy-teacher"
    path: str = "data/toy/teacher"
    tokenizer: str | None = None
    revision: str | None = None
    chat_template: str | None = None
    enable_thinking: bool = True
    trust_remote_code: bool = False


@dataclass
class SamplingConfig:
    n: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 160
    seed: int = 0


@dataclass
class EngineConfig:
    backend: str = "vllm"  # vllm | hf | openai
    # vllm
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    # None: eager on CPU, where torch.compile doubles engine start-up (measured on the toy teacher: ~65 s vs
    # ~30 s) for no decode speed-up; compiled graphs elsewhere.
    enforce_eager: bool | None = None
    # None: on CPU with one worker, the engine core and its worker run inside this process. vLLM otherwise
    # spawns two processes that each re-import vLLM: 30+ s of a toy engine's start-up, against ~3 s.
    in_process: bool | None = None
    enable_prefix_caching: bool = True
    # None: off on CPU, where vLLM 0.32's per-request seeded sampling crashes when a chunked prefill
    # discards a sampled token ("CPU Generator does not use offset"); vLLM's default elsewhere.
    enable_chunked_prefill: bool | None = None
    kv_cache_gib: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    # hf
    hf_threads: int = 0  # 0: torch default
    # openai
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    served_model: str | None = None
    concurrency: int = 16
    max_retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplerConfig:
    """What generate and eval share: both sample through `distill.generate.Sampler`, so a model is sampled
    the same way whether it is the teacher writing traces or a model under test."""

    problems: str = "train"  # a key of `data`
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    chunk_problems: int = 256
    progress: bool = True


@dataclass
class WandbConfig:
    """One W&B group per run (group = run name), one W&B run per job (a train phase, eval, export)."""

    enabled: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "distill"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class DistillConfig:
    run: RunConfig = field(default_factory=RunConfig)
    pipeline: list[str] = field(default_factory=list)
    data: dict[str, ProblemSource] = field(default_factory=dict)
    teacher: ModelRef = field(default_factory=ModelRef)
    student: ModelRef = field(default_factory=lambda: ModelRef(name="toy-student", path="data/toy/student"))
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Where stages run: in this process (`cluster=local`) or as Slurm jobs (conf/cluster/, distill.slurm).
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # Per-stage values of the chosen experiment, merged over the stage's own YAML (see distill.pipeline).
    stages: dict[str, Any] = field(default_factory=dict)
    stage: Any = None
    force: bool = False


def load_resolved(path: str | Path) -> DictConfig:
    """A resolved config written by the driver, typed again (root and stage schemas), so that a process
    without Hydra (a Slurm job, a local generate worker) sees exactly what the driver's stage saw."""
    from omegaconf import OmegaConf

    from distill.stages import stage_module

    raw = OmegaConf.load(path)
    stage = OmegaConf.merge(OmegaConf.structured(stage_module(raw.stage.name).Config), raw.pop("stage"))
    root = OmegaConf.merge(OmegaConf.structured(DistillConfig), raw)
    root.stage = stage
    return root


def register_configs() -> None:
    """Registers the root schema, the cluster schema and each stage's schema (each lives next to its code)."""
    from distill.stages import stage_schemas

    cs = ConfigStore.instance()
    cs.store(name="distill_schema", node=DistillConfig)
    cs.store(group="schema", name="cluster", node=ClusterConfig)
    for name, schema in stage_schemas().items():
        cs.store(group="schema/stage", name=name, node=schema)
