"""GPU benchmark: the Qwen3-0.6B architecture (random weights, no download) through the train stage's path.

    python bench/train_gpu_qwen3_0p6b.py [--steps 60] [--seq 16384]      # one H200, < 5 min

Builds Qwen3-0.6B from its config values (written below), saves it with the toy tokenizer (Qwen3 chat
template; ids stay below Qwen3's vocab), and trains on synthetic conversations packed into 16k-token
padding-free blocks with distill.train.worker.build_trainer: the same SFTConfig, training template, loss
mask, BFD packing, bf16 and Liger (when installed) as the production recipe, on one GPU. Prints tokens/s
and MFU (model FLOPs utilisation, against the GPU's dense bf16 peak) over the steps after warm-up.
"""

from __future__ import annotations

import argparse
import json
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

# Qwen/Qwen3-0.6B config.json values.
QWEN3_0P6B = dict(
    vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
    hidden_act="silu", attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
)  # fmt: skip
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16


def synthetic_rows(n: int, mean_tokens: int, seed: int = 0) -> list[dict]:
    """Long reasoning-shaped conversations (digits are one token each in the toy tokenizer)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = max(64, int(rng.gauss(mean_tokens, mean_tokens / 3)) // 2)
        body = " ".join(str(rng.randint(0, 9)) for _ in range(k))
        rows.append({"messages": [
            {"role": "user", "content": f"Sum the digits of {rng.randint(10**8, 10**9)}."},
            {"role": "assistant", "content": f"<think>\n{body}\n</think>\n\nThe answer is \\boxed{{{rng.randint(0, 99)}}}."},
        ]})  # fmt: skip
    return rows


def build_model_dir(out: Path, tokenizer_dir: Path) -> int:
    """Random-init Qwen3-0.6B in bf16 plus the tokenizer; returns the parameter count."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.model_max_length = QWEN3_0P6B["max_position_embeddings"]
    cfg = Qwen3Config(
        **QWEN3_0P6B, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    return n


def flops_per_token(n_params: int, mean_doc: float) -> float:
    """6N for the matmuls (tied lm_head counted once in N, so add its second use) + causal attention."""
    c = QWEN3_0P6B
    lm_head = c["vocab_size"] * c["hidden_size"]
    attn = 6 * 2 * c["num_hidden_layers"] * c["num_attention_heads"] * c["head_dim"] * (mean_doc / 2)
    return 6 * (n_params - lm_head) + 6 * lm_head + attn


def plan_for(model_dir: Path, train: Path, out: Path, a: argparse.Namespace) -> dict:
    """A phase plan as distill.train.stage writes it, with the production recipe's settings on one GPU."""
    import importlib.util

    fa2 = importlib.util.find_spec("flash_attn") is not None
    liger = importlib.util.find_spec("liger_kernel") is not None and not a.no_liger and not a.smoke
    attn = a.attn or ("flash_attention_2" if fa2 else "varlen_sdpa")
    print(f"attention={attn} liger={liger}", flush=True)
    from distill.train.stage import default_hparams, worker_plan

    hp = default_hparams(
        epochs=1, lr=3e-4, per_device_batch_size=1, max_length=a.seq, packing=True, padding_free=True,
        bf16=not a.smoke, model_dtype=a.model_dtype, attn_implementation=attn, use_liger_kernel=liger,
        gradient_checkpointing=a.grad_ckpt, logging_steps=10, save_steps=10**9, save_total_limit=1, progress=False,
    )  # fmt: skip
    return worker_plan(phase="bench", init_model=str(model_dir), train_file=train, output_dir=out, hparams=hp,
                       use_cpu=a.smoke, wandb={"enabled": False, "name": "bench"})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="packed blocks = optimizer steps")
    ap.add_argument("--seq", type=int, default=16384)
    ap.add_argument("--doc-tokens", type=int, default=3000, help="mean conversation length")
    ap.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--tokenizer", default=str(REPO / "data" / "toy" / "student"))
    ap.add_argument("--attn", default=None, help="default: flash_attention_2 if installed, else varlen_sdpa")
    ap.add_argument("--no-liger", action="store_true")
    ap.add_argument("--model-dtype", default="float32", help="weights' dtype (bf16 autocast either way)")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of 3 steps")
    ap.add_argument("--smoke", action="store_true", help="2 layers on CPU: checks the script, not the GPU")
    a = ap.parse_args()
    if a.smoke:
        QWEN3_0P6B.update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=32, vocab_size=512)  # fmt: skip
    import torch
    from transformers import TrainerCallback

    from distill.train.worker import build_trainer, init_distributed

    assert a.smoke or torch.cuda.is_available(), "this benchmark needs a GPU (or --smoke)"
    gpu = torch.cuda.get_device_name() if not a.smoke else "cpu-smoke"
    if a.smoke:  # the CUDA calls below become no-ops
        torch.cuda.synchronize = lambda: None
        torch.cuda.empty_cache = lambda: None
        torch.cuda.max_memory_allocated = lambda: 0
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), 989.0) * 1e12
    t_start = time.perf_counter()

    class Timer(TrainerCallback):
        """Step marks; with --profile, a kernel table over 3 steps after warm-up (where the time goes)."""

        def __init__(self) -> None:
            self.marks: list[float] = []
            self.prof = None

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            if a.profile and state.global_step == a.warmup_steps:
                acts = [torch.profiler.ProfilerActivity.CPU] + (
                    [] if a.smoke else [torch.profiler.ProfilerActivity.CUDA]
                )
                self.prof = torch.profiler.profile(activities=acts)
                self.prof.__enter__()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            torch.cuda.synchronize()
            self.marks.append(time.perf_counter())
            if self.prof is not None and state.global_step == a.warmup_steps + 3:
                self.prof.__exit__(None, None, None)
                key = "self_cpu_time_total" if a.smoke else "self_device_time_total"
                print(self.prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
                self.prof = None

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_params = build_model_dir(tmp / "model", Path(a.tokenizer))
        n_rows = int(a.steps * a.seq / a.doc_tokens * 1.02)
        rows = synthetic_rows(n_rows, a.doc_tokens)
        (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        plan = plan_for(tmp / "model", tmp / "train.jsonl", tmp / "out", a)
        init_distributed(plan)
        trainer = build_trainer(plan)
        trainer.add_callback(timer := Timer())
        lens = trainer.train_dataset["seq_lengths"]
        docs = [d for block in lens for d in block]
        tokens_per_step = sum(map(sum, lens)) / len(lens)
        mean_doc = sum(d * d for d in docs) / sum(docs)  # token-weighted: what attention cost scales with
        print(f"{gpu}: {n_params / 1e6:.0f}M params, {len(lens)} blocks of <= {a.seq} tokens, "
              f"{tokens_per_step:.0f} real tokens/step, mean doc {mean_doc:.0f}", flush=True)  # fmt: skip
        trainer.train()
        marks = timer.marks[a.warmup_steps :]
        steps = len(marks) - 1
        dt = marks[-1] - marks[0]
        tok_s = steps * tokens_per_step / dt
        mfu = tok_s * flops_per_token(n_params, mean_doc) / peak
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        print(json.dumps({"gpu": gpu, "timed_steps": steps, "tokens_per_s": round(tok_s), "mfu": round(mfu, 4),
                          "step_s": dt / steps, "first_loss": losses[0], "final_loss": losses[-1],
                          "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                          "total_s": time.perf_counter() - t_start}))  # fmt: skip


if __name__ == "__main__":
    main()
