"""The train stage: curriculum SFT of the student, one phase after another, on the pairs curate wrote.

Each phase runs in its own directory `<run>/train/<phase>/` with its own manifest: phase 1 starts from the
student's weights, phase k from phase k-1's `final/`, and nothing of an earlier phase is ever written again.
A finished phase (manifest with a matching key) is skipped; an interrupted one resumes from its last
checkpoint; a phase whose key changed (config, data, or an earlier phase) starts over in a clean dir.

The driver (Hydra) writes each phase's resolved plan to `<phase>/plan.json` and starts the ranks with
`accelerate launch -m distill.train.worker --config plan.json` (see distill.cluster.launch). With `num_machines > 1`
(a multi-node Slurm job, distill.cluster.slurm) the same launcher runs once per node under `srun`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.cluster.launch import deepspeed_config_path
from distill.core.io import atomic_write_json
from distill.core.manifest import (
    Manifest,
    checked_output,
    config_key,
    model_fingerprint,
    stage_key,
    up_to_date,
    upstream,
)
from distill.core.paths import Paths
from distill.core.report import rows_table
from distill.core.secrets import scrub
from distill.core.shards import dataset_files
from distill.engines.base import model_location
from distill.train import on_policy
from distill.train.args import PHASE_COLUMNS, phase_row
from distill.train.ranks import launch_phase as _launch
from distill.train.ranks import reset_if_stale
from distill.train.teacher_server import TeacherServer

log = logging.getLogger(__name__)
STAGE = "train"


@dataclass
class PhaseOverride:
    """Per-phase values that replace the stage-wide ones (None: keep the stage value), and the phase's kind:
    `sft` (the default) trains on the pairs of curate output `source` (None: the phase's name); `on_policy`
    samples from the student on its problems, scored by the run's teacher (distill.train.on_policy, whose
    OnPolicySpec gives the defaults of beta ... teacher_server)."""

    kind: str = "sft"
    source: str | None = None
    beta: float | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    use_vllm: bool | None = None
    teacher_dtype: str | None = None
    teacher_server: TeacherServer | None = None  # a vLLM server scores instead of a local teacher
    epochs: float | None = None
    lr: float | None = None
    max_length: int | None = None
    per_device_batch_size: int | None = None
    grad_accum: int | None = None
    seed: int | None = None
    logging_steps: int | None = None  # not in the key (NOT_IN_KEY): a short phase can log every step


@dataclass
class TrainConfig:
    name: str = "train"
    phases: list[str] = field(default_factory=lambda: ["phase1", "phase2"])
    # Overrides per phase, by phase name: `stage.per_phase.phase2.lr=...`, and a new name from the command line
    # too (`stage.per_phase.op2.kind=on_policy`; it must be in `phases`, else it is a typo). Typed entry by
    # entry by the driver (distill.pipeline): OmegaConf cannot add a key to a typed dict from a dotted override.
    per_phase: dict[str, Any] = field(
        default_factory=dict, metadata={"entries": PhaseOverride, "named_in": "phases"}
    )
    # launch
    strategy: str = "ddp"  # ddp | zero1 | zero2 | zero3 (conf/deepspeed/<name>.json)
    num_processes: int = 2
    num_machines: int = 1
    device: str = "auto"  # auto | cpu | cuda
    threads_per_rank: int = 1
    main_process_port: int | None = None
    # optimisation
    epochs: float = 3.0
    lr: float = 1e-4
    min_lr_rate: float = 0.1  # cosine decays to lr * min_lr_rate
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 1
    grad_accum: int = 1
    max_length: int = 1024
    # packing: rows packed once (BFD) into per_device_batch_size blocks of max_length tokens, padding-free.
    # packing=false, padding_free=true: each step's per_device_batch_size rows (re-drawn every epoch) are
    # flattened into one padding-free row: the padded batches' steps and composition without the padding.
    packing: bool = True
    packing_strategy: str = "bfd"
    padding_free: bool = True  # implied by packing
    seed: int = 0
    bf16: bool = True  # ignored on CPU
    model_dtype: str = "float32"
    # varlen_sdpa: SDPA per packed document (distill.train.attention), the CPU stand-in for flash-attn varlen
    attn_implementation: str = "varlen_sdpa"
    use_liger_kernel: bool = False  # GPU only
    gradient_checkpointing: bool = False  # GPU only
    eos_token: str = "<|im_end|>"
    pad_token: str = "<|endoftext|>"
    # bookkeeping
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    progress: bool = True
    dataset_num_proc: int | None = None  # processes for TRL's tokenising/packing maps (datasets.map)
    # W&B settings are the shared root `wandb` section (distill.core.config.WandbConfig): one run per phase.


Config = TrainConfig
# Fields that change how the stage runs but not what it writes: left out of the key.
NOT_IN_KEY = {
    "progress",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "main_process_port",
    "threads_per_rank",
    "dataset_num_proc",
    "phases",  # each phase is keyed on its own name and its predecessor's key
    "per_phase",  # folded into each phase's hparams
}
HPARAMS = (
    "epochs lr min_lr_rate warmup_ratio weight_decay max_grad_norm per_device_batch_size grad_accum max_length "
    "packing packing_strategy padding_free seed bf16 model_dtype attn_implementation use_liger_kernel gradient_checkpointing "
    "logging_steps save_steps save_total_limit progress"
).split()


def use_cpu(device: str) -> bool:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device={device!r}; valid: auto, cpu, cuda")
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"


def phase_hparams(g: DictConfig, phase: str) -> dict[str, Any]:
    """The stage-wide hyper-parameters with this phase's overrides applied."""
    h = {k: OmegaConf.to_container(g, resolve=True)[k] for k in HPARAMS}
    over = g.per_phase.get(phase)
    if over is not None:
        h.update(
            {k: v for k, v in OmegaConf.to_container(over, resolve=True).items() if v is not None and k in h}
        )
    return h


def curate_inputs(paths: Paths, phase: str) -> tuple[dict, dict | None]:
    """(train, val or None) input records for a phase from curate's manifest (outputs `<phase>[_val]`)."""
    cur = upstream(paths, "curate", f"train {phase}")
    if phase not in cur.outputs:
        raise KeyError(
            f"curate wrote no output {phase!r} (has: {', '.join(cur.outputs)}): check train.phases"
        )

    def record(name: str) -> dict:
        # checked against curate's manifest (rows, sha256) before a rank reads it
        return checked_output(cur, name, f"train {phase}") | {"key": f"{cur.key}:{name}"}

    val = f"{phase}_val"
    return record(phase), (record(val) if val in cur.outputs else None)


def wandb_id(run_name: str, phase: str, key: str) -> str:
    """W&B run ids allow letters, digits, '-' and '_': one id per (run, phase, key)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_name}-{phase}-{key}")[:120]


def default_hparams(**overrides: Any) -> dict[str, Any]:
    """The hyper-parameters of a plan: TrainConfig's defaults, then `overrides` (an unknown name is an
    error, so a test or bench cannot drift from what the stage trains with)."""
    unknown = set(overrides) - set(HPARAMS)
    if unknown:
        raise KeyError(f"unknown train hyper-parameter(s) {sorted(unknown)}; valid: {', '.join(HPARAMS)}")
    base = TrainConfig()
    return {k: getattr(base, k) for k in HPARAMS} | overrides


def worker_plan(
    *,
    phase: str,
    init_model: str,
    train_file: str | Path,
    output_dir: str | Path,
    hparams: dict[str, Any],
    val_file: str | Path | None = None,
    world_size: int = 1,
    strategy: str = "ddp",
    use_cpu: bool = True,
    eos_token: str = TrainConfig.eos_token,
    pad_token: str = TrainConfig.pad_token,
    init_revision: str | None = None,
    tokenizer: str | None = None,
    chat_template: str | None = None,
    wandb: dict | None = None,
    kind: str = "sft",
    on_policy: dict | None = None,
    **extra: Any,
) -> dict:
    """Everything a rank needs, resolved: the worker reads this and nothing else. The one builder of a plan:
    the driver, the tests and the benches all call it. An on_policy plan's train_file holds prompts."""
    missing = set(HPARAMS) - set(hparams)
    if missing:
        raise KeyError(f"plan for {phase}: hparams lack {sorted(missing)} (start from default_hparams())")
    if kind == "on_policy" and not (on_policy and on_policy.get("teacher")):
        raise ValueError(f"plan for {phase}: an on_policy plan needs on_policy settings with a teacher")
    ds = deepspeed_config_path(strategy)
    return {
        "phase": phase,
        "kind": kind,
        "on_policy": on_policy,
        **extra,
        "init_model": str(init_model),
        "init_revision": init_revision,
        "tokenizer": tokenizer,
        "chat_template": chat_template,
        "train_file": _files(train_file),
        "val_file": _files(val_file) if val_file else None,
        "output_dir": str(output_dir),
        "world_size": world_size,
        "strategy": strategy,
        "deepspeed_config": str(ds) if ds else None,
        "use_cpu": use_cpu,
        "eos_token": eos_token,
        "pad_token": pad_token,
        "hparams": dict(hparams),
        "wandb": wandb or {"enabled": False, "name": phase},
    }


def _files(f: str | Path | list) -> str | list[str]:
    return [str(x) for x in f] if isinstance(f, list | tuple) else str(f)


def phase_plan(
    cfg: DictConfig, paths: Paths, phase: str, key: str, prev: Manifest | None, io: tuple, out: Path
) -> dict:
    """The driver's plan of one phase. Phase 1 loads the student as configured (local or hub, with its
    revision, tokenizer and chat template); later phases load the previous phase's `final/`."""
    g, s = cfg.stage, cfg.student
    first = prev is None
    init = model_location(s.path, paths) if first else prev.outputs["model"]["path"]
    run_dir = out.parent.parent
    spec = on_policy.phase_spec(g, phase)
    return worker_plan(
        phase=phase,
        kind=spec["kind"],
        on_policy=on_policy.teacher_settings(cfg, paths, spec),
        key=key,
        run_name=cfg.run.name,
        init_model=init,
        init_revision=s.revision if first else None,
        tokenizer=model_location(s.tokenizer, paths) if first and s.tokenizer else None,
        chat_template=s.chat_template if first else None,
        train_file=[str(f) for f in dataset_files(io[0])],
        val_file=[str(f) for f in dataset_files(io[1])] if io[1] else None,
        dataset_num_proc=g.dataset_num_proc,
        output_dir=out,
        world_size=g.num_processes,
        strategy=g.strategy,
        use_cpu=use_cpu(g.device),
        eos_token=g.eos_token,
        pad_token=g.pad_token,
        student=OmegaConf.to_container(s, resolve=True),
        hparams=phase_hparams(g, phase),
        wandb={
            **OmegaConf.to_container(cfg.wandb, resolve=True),
            "enabled": bool(cfg.wandb.enabled and cfg.wandb.mode != "disabled"),
            "group": cfg.run.name,
            "name": f"{cfg.run.name}-{phase}",
            "id": wandb_id(cfg.run.name, phase, key),
            "dir": str(run_dir),  # <run>/wandb/, beside the other stages' W&B runs (distill.core.tracking)
        },
    )


def run_phase(
    cfg: DictConfig, paths: Paths, phase: str, prev: Manifest | None, inputs: list[dict]
) -> Manifest:
    """Trains one phase (or skips it when finished) and writes its manifest last."""
    g = cfg.stage
    out = paths.stage_dir(STAGE) / phase
    spec = on_policy.phase_spec(g, phase)
    io = curate_inputs(paths, spec["source"])
    phase_inputs = [*inputs, io[0], *([io[1]] if io[1] else [])]
    if spec["kind"] == "on_policy":
        prompts = {k: v for k, v in io[0].items() if k not in ("format", "shards")} | {
            "path": str(out / "prompts.jsonl")
        }
        io = (prompts, None)  # no held-out pairs: nothing to score
        phase_inputs = [*inputs, phase_inputs[len(inputs)], on_policy.teacher_fingerprint(cfg, paths)]
    if prev is not None:
        phase_inputs.append(
            {"name": prev.config["phase"], "path": prev.outputs["model"]["path"], "key": prev.key}
        )
    keyed = {"stage": g, "student": cfg.student, "phase": phase, "hparams": phase_hparams(g, phase)}
    keyed |= {"spec": on_policy.keyed_spec(spec)} if spec["kind"] != "sft" else {}  # SFT: as before kinds
    key = stage_key(keyed, [i["key"] for i in phase_inputs], NOT_IN_KEY, under=("stage", "hparams"))
    if m := up_to_date(out, key, cfg.force, f"train {phase}"):
        return m
    reset_if_stale(out, key, bool(cfg.force))
    plan = phase_plan(cfg, paths, phase, key, prev, io, out)
    plan["lineage"] = phase_inputs  # the W&B model artifact's inputs (distill.core.tracking.log_artifact)
    out.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "on_policy":
        on_policy.write_prompts(phase_inputs[len(inputs)], out / "prompts.jsonl")
    atomic_write_json(out / "plan.json", scrub(plan))  # ranks read this file: no secret goes in it
    t0 = time.perf_counter()
    result = _launch(cfg, plan, out)
    final = out / "final"
    if not (final / "config.json").exists():
        raise RuntimeError(f"train {phase}: ranks finished but {final} has no config.json")
    m = Manifest(
        stage=STAGE,
        key=key,
        config={"phase": phase, **{k: v for k, v in plan.items() if k not in ("wandb", "key", "lineage")}},
        inputs=phase_inputs,
        outputs={"model": {"path": str(final)}, "log": {"path": str(out / "train_log.json")}},
        metrics={k: v for k, v in result.items() if k != "log_history"},
        timings={"train_s": time.perf_counter() - t0},
    )
    m.write(out)
    return m


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    g = cfg.stage
    if not g.phases:
        raise ValueError("train.phases is empty: name at least one curate output to train on")
    on_policy.check_phases(cfg, paths)
    t_start = time.perf_counter()
    out_dir = paths.stage_dir(STAGE)
    student = model_fingerprint(
        paths.resolve(cfg.student.path), cfg.student.name, cfg.student.revision, "student"
    )
    phases: list[Manifest] = []
    for phase in g.phases:
        phases.append(run_phase(cfg, paths, phase, phases[-1] if phases else None, [student]))
    key = config_key({"phases": list(g.phases)}, [m.key for m in phases])
    if m := up_to_date(out_dir, key, cfg.force, "train"):
        return m
    last = phases[-1]
    m = Manifest(
        stage=STAGE,
        key=key,
        config=OmegaConf.to_container(g, resolve=True),
        inputs=[
            {"name": p.config["phase"], "path": str(out_dir / p.config["phase"]), "key": p.key}
            for p in phases
        ],
        outputs={  # the phases' digests, taken when each phase finished (not re-hashed here)
            "model": dict(last.outputs["model"]),
            **{p.config["phase"]: dict(p.outputs["model"]) for p in phases},
        },
        metrics={p.config["phase"]: p.metrics for p in phases},
        timings={"total_s": time.perf_counter() - t_start},
    )
    m.write(out_dir)
    rows_table("train", PHASE_COLUMNS, [phase_row(p.config["phase"], p.metrics) for p in phases])
    return m
