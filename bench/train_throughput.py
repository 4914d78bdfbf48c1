"""Padding vs the train stage's packing: tokens/s, real-token share, final losses, on the toy student.

    .venv/bin/python bench/train_throughput.py [--data a.jsonl b.jsonl] [--epochs 3]

Both runs are one process each, same student, same rows, same lr schedule, seed and epochs, and loss on
the assistant turn only (so the losses are comparable):
  * padded: TRL `SFTTrainer` with its plain defaults (no packing, batches padded to their longest row,
    per_device_train_batch_size=8);
  * stage: distill.train_worker.build_trainer, i.e. BFD packing, padding-free with restarted position ids,
    the Qwen3 training template; blocks sized to hold the same ~8 conversations per step.
tokens/s counts real (non-pad) tokens over the Trainer's train_runtime. The final losses compared are the
eval losses of both trained models on the same held-out rows.
Default data: runs/toy/curate/phase{1,2}.jsonl if the toy pipeline ran, else synthetic chain sums.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PROMPT = "{q}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Toy-shaped conversations with 2-6 term chains: lengths vary like short and long traces do."""
    rng, rows = random.Random(seed), []
    for _ in range(n):
        terms = rng.randint(2, 6)
        nums = [rng.randint(1, 99) for _ in range(terms)]
        acc, lines, expr = nums[0], [], str(nums[0])
        for x in nums[1:]:
            op = rng.choice("+-")
            new = acc + x if op == "+" else acc - x
            lines.append(f"{acc} {op} {x} = {new}")
            acc, expr = new, f"{expr} {op} {x}"
        think = "<think>\n" + "\n".join(lines) + f"\n</think>\n\nThe answer is \\boxed{{{acc}}}."
        rows.append({"messages": [{"role": "user", "content": PROMPT.format(q=f"What is {expr}?")},
                                  {"role": "assistant", "content": think}]})  # fmt: skip
    return rows


def load_rows(paths: list[str]) -> list[dict]:
    if not paths:
        toy = [REPO / "runs" / "toy" / "curate" / f"phase{i}.jsonl" for i in (1, 2)]
        paths = [str(p) for p in toy if p.exists()]
    if not paths:
        return synthetic_rows(1200)
    rows = []
    for p in paths:
        rows += [{"messages": json.loads(line)["messages"]} for line in open(p) if line.strip()]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage_trainer(
    student: Path, train: Path, val: Path, out: Path, a: argparse.Namespace, rows_per_step: int
):
    """The train stage's own trainer (world 1), blocks sized for ~rows_per_step conversations per step."""
    from distill.train_worker import build_trainer, init_distributed

    mean_len = a.mean_len
    blocks = rows_per_step if a.one_per_block else max(1, math.ceil(rows_per_step * mean_len / a.block))
    plan = {
        "phase": "bench", "init_model": str(student), "train_file": str(train), "val_file": str(val),
        "output_dir": str(out), "world_size": 1, "deepspeed_config": None, "use_cpu": True,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "wandb": {"enabled": False, "name": "bench"},
        "hparams": {
            "epochs": a.epochs, "lr": a.lr, "min_lr_rate": 0.1, "warmup_ratio": 0.03, "weight_decay": 0.0,
            "max_grad_norm": 1.0, "per_device_batch_size": blocks, "grad_accum": 1, "max_length": a.block,
            "packing": True, "packing_strategy": "bfd", "seed": 0, "bf16": False, "model_dtype": "float32",
            "attn_implementation": a.attn, "use_liger_kernel": False, "gradient_checkpointing": False,
            "logging_steps": 10, "save_steps": 10**9, "save_total_limit": 1, "progress": False,
        },
    }  # fmt: skip
    init_distributed(plan)
    return build_trainer(plan)


def padded_trainer(student: Path, train: Path, val: Path, out: Path, a: argparse.Namespace):
    """TRL SFTTrainer, plain defaults (padding, batch 8), with only loss masking/schedule made equal."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(student)
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=a.epochs, learning_rate=a.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=0.03, assistant_only_loss=True, use_cpu=True,
        bf16=False, dataloader_pin_memory=False, save_strategy="no", report_to="none", logging_steps=10,
        seed=0, data_seed=0, shuffle_dataset=True, disable_tqdm=True,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(student, use_safetensors=True, attn_implementation="sdpa")
    ds = {k: load_dataset("json", data_files=str(p), split="train") for k, p in (("t", train), ("v", val))}
    return SFTTrainer(
        model=model, args=args, train_dataset=ds["t"], eval_dataset=ds["v"], processing_class=tok
    )


def measure(trainer, name: str) -> dict:
    """Trains, then reports real tokens/s, the real-token share of the batches, and the losses."""
    pad = trainer.processing_class.pad_token_id
    real = total = 0
    for batch in trainer.get_train_dataloader():
        ids = batch["input_ids"]
        real += (
            int((ids != pad).sum()) if "attention_mask" not in batch else int(batch["attention_mask"].sum())
        )
        total += ids.numel()
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    runtime = out.metrics["train_runtime"]
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    ev = trainer.evaluate()["eval_loss"]
    epochs = trainer.args.num_train_epochs
    res = {
        "name": name, "steps": trainer.state.global_step, "real_tokens": real * epochs, "runtime_s": runtime,
        "wall_s": wall, "tokens_per_s": real * epochs / runtime, "real_share": real / total,
        "final_train_loss": sum(losses[-3:]) / len(losses[-3:]), "eval_loss": ev,
    }  # fmt: skip
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--student", default=str(REPO / "data" / "toy" / "student"))
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--block", type=int, default=384, help="packed block length (>= longest row)")
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument(
        "--attn", default="varlen_sdpa", help="the stage's attention (varlen_sdpa: per-document SDPA)"
    )
    ap.add_argument(
        "--one-per-block",
        action="store_true",
        help="blocks hold one conversation, 8 a step: the padded run's steps and batch composition, minus padding",
    )
    a = ap.parse_args()
    import torch
    from accelerate.state import AcceleratorState
    from transformers import AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = load_rows(a.data)
    random.Random(0).shuffle(rows)
    rows = rows[: a.rows]
    n_val = max(16, len(rows) // 10)
    tok = AutoTokenizer.from_pretrained(a.student)
    lens = [len(tok.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]
    a.mean_len = sum(lens) / len(lens)
    if a.one_per_block:
        a.block = max(lens)
    print(f"rows={len(rows)} (val {n_val}) mean_len={a.mean_len:.0f} max_len={max(lens)} threads="
          f"{torch.get_num_threads()}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, val = (
            write_jsonl(tmp / "train.jsonl", rows[n_val:]),
            write_jsonl(tmp / "val.jsonl", rows[:n_val]),
        )
        base = measure(padded_trainer(Path(a.student), train, val, tmp / "padded", a), "trl-padded-defaults")
        AcceleratorState._reset_state(reset_partial_state=True)
        ours = measure(
            stage_trainer(Path(a.student), train, val, tmp / "stage", a, 8), "distill-train-packed"
        )
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    rel = abs(ours["eval_loss"] - base["eval_loss"]) / base["eval_loss"]
    print(
        f"\ntokens/s  padded {base['tokens_per_s']:.0f}  stage {ours['tokens_per_s']:.0f}  ratio {ratio:.2f}x"
    )
    print(f"real-token share  padded {base['real_share']:.1%}  stage {ours['real_share']:.1%}")
    print(f"eval loss  padded {base['eval_loss']:.4f}  stage {ours['eval_loss']:.4f}  (rel diff {rel:.1%})")
    print(f"final train loss  padded {base['final_train_loss']:.4f}  stage {ours['final_train_loss']:.4f}")
    print(
        f"goals: ratio>=1.5 {ratio >= 1.5}  share>=97% {ours['real_share'] >= 0.97}  losses within 5% {rel < 0.05}"
    )
    if not all(math.isfinite(x) for x in (base["eval_loss"], ours["eval_loss"])):
        raise SystemExit("non-finite loss")


if __name__ == "__main__":
    main()
