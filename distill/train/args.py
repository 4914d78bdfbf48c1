"""The TrainingArguments every phase kind shares, from the plan: schedule, precision, devices and
bookkeeping. SFT and on-policy phases differ only in their own fields, so a CPU workaround or a save
setting is made once and holds for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shared_args(plan: dict) -> dict[str, Any]:
    """Keyword arguments for SFTConfig / DistillationConfig; CPU forces the settings measured to work
    (no bf16, no pinned memory, no gradient checkpointing, gloo)."""
    h, cpu = plan["hparams"], plan["use_cpu"]
    ds = plan["deepspeed_config"]
    return dict(
        output_dir=str(Path(plan["output_dir"]) / "checkpoints"),
        num_train_epochs=h["epochs"],
        learning_rate=h["lr"],
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": h["min_lr_rate"]},
        warmup_steps=h["warmup_ratio"],  # a float < 1 is a ratio of the total steps
        weight_decay=h["weight_decay"],
        max_grad_norm=h["max_grad_norm"],
        per_device_train_batch_size=h["per_device_batch_size"],
        gradient_accumulation_steps=h["grad_accum"],
        seed=h["seed"],
        data_seed=h["seed"],
        bf16=h["bf16"] and not cpu,
        use_cpu=cpu and not ds,  # DeepSpeed runs on its own CPU accelerator
        gradient_checkpointing=h["gradient_checkpointing"] and not cpu,
        dataloader_pin_memory=not cpu,
        deepspeed=ds,
        accelerator_config={"use_configured_state": True},
        ddp_backend="gloo" if cpu else None,
        logging_steps=h["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",
        save_steps=h["save_steps"],
        save_total_limit=h["save_total_limit"],
        eval_strategy="no",
        report_to=["wandb"] if plan["wandb"]["enabled"] else "none",
        run_name=plan["wandb"]["name"],
        disable_tqdm=not h["progress"],
    )


def run_summary(trainer: Any, resumed_from: str | None, seconds: float, world: int) -> dict[str, Any]:
    """The part of a phase manifest's metrics every kind reports: steps, losses, world size, resume point
    and run time (the kinds add their own throughput and cost figures)."""
    hist = trainer.state.log_history
    losses = [(r["step"], r["loss"]) for r in hist if "loss" in r]
    train_rows = [r for r in hist if "train_runtime" in r]
    return {
        "world_size": world,
        "global_step": trainer.state.global_step,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "first_logged_step": losses[0][0] if losses else None,
        "max_steps": trainer.state.max_steps,
        "resumed_from": Path(resumed_from).name if resumed_from else None,
        "resume_step": int(Path(resumed_from).name.rsplit("-", 1)[-1]) if resumed_from else 0,
        "train_runtime_s": train_rows[-1]["train_runtime"] if train_rows else seconds,
        "wall_s": seconds,
        "log_history": hist,
    }


PHASE_COLUMNS = [
    "phase",
    "kind",
    "ranks",
    "steps",
    "first loss",
    "final loss",
    "resumed at",
    "wall s",
    "tokens/s",
]


def phase_row(phase: str, x: dict[str, Any]) -> list[Any]:
    """A phase's line of the console table (the manifest keeps every metric). tokens/s: trained tokens
    (SFT) or teacher-scored prompt + completion tokens (on-policy) per second of training."""
    tokens = x.get("tokens_per_s")
    if tokens is None and x.get("teacher_forward_tokens") and x.get("train_runtime_s"):
        tokens = x["teacher_forward_tokens"] / x["train_runtime_s"]
    resumed = x.get("resume_step") if x.get("resumed_from") else None
    return [phase, x.get("kind", "sft"), x.get("world_size"), x.get("global_step"), x.get("first_loss"),
            x.get("final_loss"), resumed, x.get("wall_s"), tokens]  # fmt: skip
