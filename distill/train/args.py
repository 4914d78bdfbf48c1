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
