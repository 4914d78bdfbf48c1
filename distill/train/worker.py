"""One training rank of one curriculum phase: `python -m distill.train.worker --config <phase plan JSON>`.

Started by `accelerate launch` from the driver (distill.train.stage); plain python, never Hydra. The plan file
holds everything resolved (paths, hyper-parameters, strategy, world size, W&B settings), so every rank sees
the same values. The rank checks the world size before it builds anything: a launcher that silently starts
N independent world-1 trainings (e.g. `accelerate launch --cpu`, or DDP without use_cpu on CPU) fails here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from distill.cluster.launch import die_with_parent
from distill.train.args import run_summary, shared_args
from distill.train.attention import register_varlen_sdpa
from distill.train.progress import ProgressLines
from distill.train.recovery import newest_complete, write_rank_error
from distill.train.rows import check_lengths, data_cache, load_rows, writer_rows
from distill.train.tokenizer import prepare_tokenizer
from distill.train.trl_patches import bounded_preparation, score_label_positions_only


def init_distributed(plan: dict) -> Any:
    """Creates the process group (gloo on CPU) before SFTConfig, and checks the world size.

    DeepSpeed on CPU ranks needs ACCELERATE_USE_DEEPSPEED and a pre-made PartialState (then SFTConfig uses it
    via `use_configured_state`), else it miscounts the world and rejects its own batch-size arithmetic.
    """
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # else one plain process: no process group
    kwargs: dict[str, Any] = {"backend": "gloo"} if plan["use_cpu"] and launched else {}
    if plan["deepspeed_config"]:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    elif plan["use_cpu"]:
        kwargs["cpu"] = True
    state = PartialState(**kwargs)
    check_world_size(state.num_processes, plan["world_size"])
    return state


def check_world_size(actual: int, expected: int) -> None:
    """N ranks that each see world size 1 would train N independent copies and look healthy: refuse."""
    import torch.distributed as dist

    seen = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if actual != expected or seen != expected:
        raise RuntimeError(
            f"world size mismatch: configured {expected} ranks, accelerate sees {actual}, torch.distributed "
            f"sees {seen}; the launcher did not form one process group (check --multi_gpu / use_cpu)"
        )


def sft_config(plan: dict) -> Any:
    """SFTConfig from the plan: the shared arguments (distill.train.args) plus SFT's own."""
    from trl import SFTConfig

    h, cpu = plan["hparams"], plan["use_cpu"]
    flat = not h["packing"] and h["padding_free"]
    return SFTConfig(
        **shared_args(plan),
        per_device_eval_batch_size=h["per_device_batch_size"],
        max_length=None if flat else h["max_length"],  # TRL cannot truncate flattened rows: check_lengths
        packing=h["packing"],
        packing_strategy=h["packing_strategy"],
        padding_free=h["packing"] or flat,
        assistant_only_loss=True,
        eos_token=plan["eos_token"],
        shuffle_dataset=True,
        use_liger_kernel=h["use_liger_kernel"] and not cpu,
        dataset_num_proc=plan.get("dataset_num_proc"),
    )


def build_trainer(plan: dict) -> Any:
    """The SFTTrainer for one phase; importable so tests can inspect its prepared labels in-process."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    revision = plan.get("init_revision")
    tok = prepare_tokenizer(
        plan.get("tokenizer") or plan["init_model"],
        plan["eos_token"],
        plan["pad_token"],
        revision=None if plan.get("tokenizer") else revision,
        chat_template=plan.get("chat_template"),
    )
    args = sft_config(plan)
    h = plan["hparams"]
    register_varlen_sdpa()
    model = AutoModelForCausalLM.from_pretrained(
        plan["init_model"],
        revision=revision,
        dtype=getattr(torch, h["model_dtype"]),
        attn_implementation=h["attn_implementation"],
        use_safetensors=True,
    )
    mean_tokens = check_lengths(tok, plan, h["max_length"])  # packed or not: BFD would cut a longer row
    eos_id = tok.eos_token_id
    model.config.eos_token_id = eos_id
    gen_eos = model.generation_config.eos_token_id
    if gen_eos is None or (eos_id not in gen_eos if isinstance(gen_eos, list) else gen_eos != eos_id):
        model.generation_config.eos_token_id = eos_id
    with bounded_preparation(writer_rows(mean_tokens)):
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=load_rows(plan["train_file"], data_cache(plan)),
            eval_dataset=load_rows(plan.get("val_file"), data_cache(plan)),
            processing_class=tok,
        )
    if plan["use_cpu"]:
        score_label_positions_only(trainer)
    return trainer


def init_wandb(plan: dict, is_main: bool) -> Any:
    """One W&B run per phase, created here (rank 0) so project/entity/group/id come from the config.

    The Trainer's callback reuses an active run. A stable id per phase key lets a resumed phase continue
    its own run instead of starting a second one.
    """
    w = plan["wandb"]
    if not (w["enabled"] and is_main):
        return None
    import wandb

    from distill.core.secrets import scrub

    Path(w["dir"]).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=w["project"],
        entity=w["entity"],
        group=w["group"],
        name=w["name"],
        id=w["id"],
        resume="allow",
        dir=w["dir"],
        mode=w["mode"],
        job_type="train",
        tags=list(w["tags"]),
        config={"distill": scrub(plan)},
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint, else None: a half-written newest one (killed mid-save) falls back to
    the one before it rather than to step 0 (distill.train.recovery says what complete means)."""
    last = newest_complete(output_dir / "checkpoints")
    return str(last) if last else None


def save_final(trainer: Any, out: Path, state: Any) -> None:
    """Consolidated safetensors + config + tokenizer into `<phase>/final/`, renamed in place when complete.

    Under ZeRO-3 every rank must join `save_model` (it gathers the shards: the DeepSpeed configs set
    `stage3_gather_16bit_weights_on_model_save`); rank 0 writes.
    """
    tmp = out / "final.tmp"
    if state.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    state.wait_for_everyone()
    trainer.save_model(str(tmp))
    state.wait_for_everyone()
    if state.is_main_process:
        if not (tmp / "model.safetensors").exists() and not any(tmp.glob("model-*.safetensors")):
            raise RuntimeError(f"{tmp}: save_model wrote no safetensors weights")
        trainer.model.generation_config.save_pretrained(tmp)
        final = out / "final"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    state.wait_for_everyone()


def train_summary(trainer: Any, resumed_from: str | None, seconds: float, world: int) -> dict:
    """What the driver puts in an SFT phase's manifest: the shared summary plus tokens/s."""
    out = run_summary(trainer, resumed_from, seconds, world)
    tokens_per_epoch = sum(len(x) for x in trainer.train_dataset["input_ids"])
    runtime = out["train_runtime_s"]
    out["train_tokens_per_epoch"] = tokens_per_epoch
    out["tokens_per_s"] = (
        tokens_per_epoch * trainer.args.num_train_epochs / max(runtime, 1e-9) if not resumed_from else None
    )
    return out


_T0 = time.perf_counter()


def mark(state: Any, msg: str) -> None:
    """Rank-0 progress with elapsed seconds: start-up, data prep and saving dominate short phases."""
    if state.is_main_process:
        print(f"[distill] train worker +{time.perf_counter() - _T0:.1f}s: {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="phase plan JSON written by distill.train.stage")
    plan = json.loads(Path(p.parse_args(argv).config).read_text())
    try:
        return train_phase(plan)
    except BaseException as e:
        if not isinstance(e, SystemExit) or e.code:
            write_rank_error(Path(plan["output_dir"]), e)  # the driver names this, not ChildFailedError
        raise


def train_phase(plan: dict) -> int:
    """One rank's whole phase: process group, trainer, resume, train, save, summary, W&B artifact."""
    t0 = time.perf_counter()
    state = init_distributed(plan)
    mark(state, f"{state.num_processes} ranks up ({state.distributed_type})")
    out = Path(plan["output_dir"])
    run = init_wandb(plan, state.is_main_process)
    mark(state, "W&B ready")
    kind = plan.get("kind", "sft")
    if kind == "on_policy":  # the student samples, the teacher scores (distill.train.on_policy)
        from distill.train import on_policy

        trainer, summarize = on_policy.build_trainer(plan), on_policy.summary
    else:
        trainer, summarize = build_trainer(plan), train_summary
    mark(state, f"{kind} trainer built ({len(trainer.train_dataset)} rows)")
    trainer.add_callback(ProgressLines(plan["phase"]))  # the driver's progress bar (distill.train.progress)
    if trainer.args.world_size != plan["world_size"]:
        raise RuntimeError(f"Trainer world size {trainer.args.world_size} != configured {plan['world_size']}")
    resume = last_checkpoint(out)
    if resume and state.is_main_process:
        print(f"[distill] train {plan['phase']}: resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    mark(state, "trained")
    metrics = {}
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
    save_final(trainer, out, state)
    mark(state, "final weights saved")
    if state.is_main_process:
        summary = summarize(trainer, resume, time.perf_counter() - t0, state.num_processes)
        summary["eval"] = metrics
        (out / "train_log.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if run is not None:
        from distill.core.tracking import log_artifact

        run_dir = Path(plan["wandb"]["dir"])
        name = f"{plan['run_name']}-{plan['phase']}"
        log_artifact(
            run, run_dir, name, "model", plan["key"], {"final": out / "final"}, plan.get("lineage", [])
        )
        run.finish()
    mark(state, "done")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
