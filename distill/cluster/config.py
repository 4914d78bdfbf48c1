"""The cluster schema (`cluster=local|slurm|h100|mi300`): where stages run and what each asks of Slurm.

Kept apart from the submitter so that the root config can type `cluster` without importing sbatch code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omegaconf import DictConfig

from distill.core.config import STAGES

KINDS = ("local", "slurm")


@dataclass
class StageResources:
    """One stage's Slurm request; None falls back to the cluster-wide value."""

    nodes: int = 1
    time: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    exclusive: bool = False  # the whole node (e.g. curate's verifier pool on every core)
    array_parallelism: int | None = None  # generate: array tasks running at once (`--array=...%P`)


def _default_stages() -> dict[str, StageResources]:
    return {name: StageResources() for name in STAGES}


@dataclass
class ClusterConfig:
    """Where stages run: `local` (this process, as without a cluster) or `slurm` (batch jobs)."""

    kind: str = "local"  # local | slurm
    dry_run: bool = False  # print the batch scripts and sbatch command lines, submit nothing
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    python: str | None = None  # interpreter in the jobs; None: the one running the driver
    setup: list[str] = field(default_factory=list)  # shell lines run first in every job (module load ...)
    env: dict[str, str] = field(default_factory=dict)  # exported to every job (NCCL_*, HIP_*, ...)
    extra_sbatch: list[str] = field(default_factory=list)  # more sbatch options, verbatim
    requeue: bool = True
    main_process_port: int | None = None  # multi-node train rendezvous; None: derived from the job id
    stages: dict[str, StageResources] = field(default_factory=_default_stages)


def _known_keys(node: DictConfig, schema: type, where: str) -> None:
    """Hydra's `+key=value` adds keys even to typed nodes: a typo there must not be silently ignored."""
    unknown = set(node.keys()) - {f.name for f in fields(schema)}
    if unknown:
        raise ValueError(
            f"{where}.{sorted(unknown)[0]}: unknown key; valid: {', '.join(f.name for f in fields(schema))}"
        )


def validate(cluster: DictConfig) -> None:
    """Checks what OmegaConf's types cannot: names and ranges, with the offending key in the message."""
    _known_keys(cluster, ClusterConfig, "cluster")
    if cluster.kind not in KINDS:
        raise ValueError(f"cluster.kind={cluster.kind!r}: valid kinds are {', '.join(KINDS)}")
    if cluster.gpus_per_node < 0:
        raise ValueError(f"cluster.gpus_per_node={cluster.gpus_per_node}: must be >= 0")
    for name, res in cluster.stages.items():
        if name not in STAGES:
            raise ValueError(f"cluster.stages.{name}: unknown stage; valid stages: {', '.join(STAGES)}")
        _known_keys(res, StageResources, f"cluster.stages.{name}")
        if res.nodes < 1:
            raise ValueError(f"cluster.stages.{name}.nodes={res.nodes}: must be >= 1")
        if name != "train" and res.nodes != 1:
            raise ValueError(f"cluster.stages.{name}.nodes={res.nodes}: only train runs on several nodes")
        for key in ("array_parallelism", "cpus_per_task", "gpus_per_node"):
            low = 0 if key == "gpus_per_node" else 1
            if res[key] is not None and res[key] < low:
                raise ValueError(f"cluster.stages.{name}.{key}={res[key]}: must be >= {low}")
