"""The config sections every stage shares (run, problem sources, models, W&B) and the root schema.

Values live in `conf/*.yaml`; these dataclasses only fix the shape and types so that a typo in a key or a
wrong type fails at composition time with the key's name, not deep inside a stage. Each stage's own schema
lives next to its `run()`; the cluster schema next to the launcher (`distill.cluster.config`). The root
schema types `cluster` as Any here so that core never imports the cluster package: the cluster group's
YAML brings its own schema, and `distill.pipeline` types it again when a resolved config is read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.core.logs import LogConfig

# The pipeline's stages in order; `distill.pipeline` maps each name to its package.
STAGES = ("generate", "curate", "train", "eval", "export")


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
    # How its completions hold reasoning: auto | think | think_prompted | harmony | none
    # (distill.engines.formats; auto reads the tokenizer and chat template).
    reasoning_format: str = "auto"
    trust_remote_code: bool = False


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
    # Console verbosity: `log.level=debug` (or `python -m distill -v`) shows every line (distill.core.logs).
    log: LogConfig = field(default_factory=LogConfig)
    # Where stages run: in this process (`cluster=local`) or as Slurm jobs (conf/cluster/, distill.cluster).
    cluster: Any = None
    # Per-stage values of the chosen experiment, merged over the stage's own YAML (see distill.pipeline).
    stages: dict[str, Any] = field(default_factory=dict)
    stage: Any = None
    force: bool = False
