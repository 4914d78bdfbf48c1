"""GPU benchmark: the Qwen3-0.6B architecture (random weights, no download) through the train stage's path.

    python bench/train_gpu_qwen3_0p6b.py [--steps 60] [--seq 16384]   # the bench's settings, one H200, < 2 min
    python bench/train_gpu_qwen3_0p6b.py --recipe                       # the ReasonLite recipe's settings
    python bench/train_gpu_qwen3_0p6b.py --compare                      # both, each in a fresh process
    python bench/train_gpu_qwen3_0p6b.py --smoke [--recipe|--compare]   # CPU, 2 tiny layers: checks the script

Builds Qwen3-0.6B from its config values (written below), saves it with the toy tokenizer (Qwen3 chat
template; ids stay below Qwen3's vocab), and trains on synthetic conversations packed padding-free into
blocks with distill.train.worker.build_trainer: the same SFTConfig, training template, loss mask and BFD
packing as the stage, on one GPU. The bench's settings: 16k blocks of ~3k-token conversations, fp32
weights, bf16 autocast, Liger when installed, no gradient checkpointing. `--recipe` takes every train
setting from conf/experiment/reasonlite.yaml (32k blocks, packing, bf16, Liger, gradient checkpointing,
flash_attention_2, grad_accum 4, fp32 weights as TrainConfig's default) and R1-shaped conversation lengths
(bench/train_throughput.py's reasoning_lengths); what it cannot match on this machine (one GPU instead of
8 with ZeRO-1, flash-attn or Liger not installed) is printed as `not_as_recipe`. Prints tokens/s, MFU
(model FLOPs utilisation against the GPU's dense bf16 peak; recomputed activations are not model FLOPs)
and peak memory over the blocks after warm-up; the last line is `RESULT train_gpu_qwen3_0p6b ...`.
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
RECIPE = REPO / "conf" / "experiment" / "reasonlite.yaml"
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16


def synthetic_rows(n: int, mean_tokens: int, seed: int = 0, lengths: list[int] | None = None) -> list[dict]:
    """Long reasoning-shaped conversations (a digit and its space are a token each in the toy tokenizer):
    lengths around mean_tokens, or the given ones."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        target = lengths[i] if lengths else int(rng.gauss(mean_tokens, mean_tokens / 3))
        body = " ".join(str(rng.randint(0, 9)) for _ in range(max(64, target // 2)))
        rows.append({"messages": [
            {"role": "user", "content": f"Sum the digits of {rng.randint(10**8, 10**9)}."},
            {"role": "assistant", "content": f"<think>\n{body}\n</think>\n\nThe answer is \\boxed{{{rng.randint(0, 99)}}}."},
        ]})  # fmt: skip
    return rows


def recipe_hparams() -> dict:
    """The ReasonLite recipe's train settings (conf/experiment/reasonlite.yaml, `stages.train`), read from
    the file so that this bench cannot drift from it; only the keys a worker plan has."""
    from omegaconf import OmegaConf

    from distill.train.stage import HPARAMS

    train = OmegaConf.to_container(OmegaConf.load(RECIPE).stages.train, resolve=True)
    return {k: v for k, v in train.items() if k in HPARAMS}


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


def plan_for(model_dir: Path, train: Path, out: Path, a: argparse.Namespace) -> tuple[dict, list[str]]:
    """A phase plan as distill.train.stage writes it, on one GPU: the bench's settings, or with --recipe the
    recipe's own; and the ways it departs from the recipe (printed with the result)."""
    import importlib.util

    from distill.train.stage import default_hparams, worker_plan

    fa2 = importlib.util.find_spec("flash_attn") is not None
    has_liger = importlib.util.find_spec("liger_kernel") is not None
    off: list[str] = ["1 GPU, no ZeRO (recipe: 8 GPUs, ZeRO-1)"] if a.recipe else []
    if a.recipe:
        rec = recipe_hparams()
        hp = default_hparams(**{**rec, "epochs": 1, "max_length": a.seq, "logging_steps": 10, "save_steps": 10**9,
                                "save_total_limit": 1, "progress": False})  # fmt: skip
        if a.seq != rec["max_length"]:
            off.append(f"max_length {a.seq} (recipe: {rec['max_length']})")
        if hp["attn_implementation"] == "flash_attention_2" and not fa2:
            hp["attn_implementation"] = "varlen_sdpa"
            off.append("attention varlen_sdpa: flash-attn is not installed (recipe: flash_attention_2)")
        if hp["use_liger_kernel"] and not has_liger:
            hp["use_liger_kernel"] = False
            off.append("no Liger: liger-kernel is not installed")
    else:
        hp = default_hparams(
            epochs=1, lr=3e-4, per_device_batch_size=1, max_length=a.seq, packing=True, padding_free=True,
            bf16=True, model_dtype=a.model_dtype, attn_implementation=a.attn or ("flash_attention_2" if fa2 else "varlen_sdpa"),
            use_liger_kernel=has_liger and not a.no_liger, gradient_checkpointing=a.grad_ckpt, logging_steps=10,
            save_steps=10**9, save_total_limit=1, progress=False,
        )  # fmt: skip
    if a.attn:
        hp["attn_implementation"] = a.attn
        off += [f"attention {a.attn} (--attn)"] if a.recipe else []
    if a.smoke:  # on CPU the worker turns Liger, bf16 and checkpointing off; say so rather than pretend
        hp.update(bf16=False, use_liger_kernel=False, gradient_checkpointing=False)
        off.append("smoke: CPU, 2 tiny layers, no bf16/Liger/checkpointing, varlen_sdpa")
        if hp["attn_implementation"] == "flash_attention_2":
            hp["attn_implementation"] = "varlen_sdpa"
    print(f"attention={hp['attn_implementation']} liger={hp['use_liger_kernel']} "
          f"grad_ckpt={hp['gradient_checkpointing']} weights={hp['model_dtype']} grad_accum={hp['grad_accum']}", flush=True)  # fmt: skip
    plan = worker_plan(phase="bench", init_model=str(model_dir), train_file=train, output_dir=out, hparams=hp,
                       use_cpu=a.smoke, wandb={"enabled": False, "name": "bench"})  # fmt: skip
    return plan, off


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="packed blocks (60; --recipe 24; --smoke 8)")
    ap.add_argument(
        "--seq", type=int, default=None, help="block length (16384; --recipe the recipe's; --smoke 2048)"
    )
    ap.add_argument(
        "--doc-tokens", type=int, default=3000, help="mean conversation length (not with --recipe)"
    )
    ap.add_argument(
        "--warmup-steps", type=int, default=None, help="blocks left out of the timing (5; --recipe 8)"
    )
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--tokenizer", default=str(REPO / "data" / "toy" / "student"))
    ap.add_argument("--attn", default=None, help="default: flash_attention_2 if installed, else varlen_sdpa")
    ap.add_argument("--no-liger", action="store_true")
    ap.add_argument("--model-dtype", default="float32", help="weights' dtype (bf16 autocast either way)")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of 3 steps")
    ap.add_argument("--smoke", action="store_true", help="2 layers on CPU: checks the script, not the GPU")
    ap.add_argument("--recipe", action="store_true", help="the ReasonLite recipe's own train settings")
    ap.add_argument("--compare", action="store_true", help="the bench's settings, then --recipe, one run")
    ap.add_argument("--json-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    seq = recipe_hparams()["max_length"] if a.recipe else 16384
    a.seq = a.seq or (2048 if a.smoke else seq)
    a.steps = a.steps or (8 if a.smoke else 24 if a.recipe else 60)
    a.warmup_steps = a.warmup_steps if a.warmup_steps is not None else 2 if a.smoke else 8 if a.recipe else 5
    return a


def training_rows(a: argparse.Namespace) -> list[dict]:
    """Enough conversations for a.steps blocks: around --doc-tokens, or with --recipe R1-shaped lengths up
    to the block length (bench/train_throughput.py's reasoning_lengths: mean 0.18 of it, a tail to it)."""
    if not a.recipe:
        return synthetic_rows(int(a.steps * a.seq / a.doc_tokens * 1.02), a.doc_tokens)
    sys.path.insert(0, str(REPO / "bench"))
    from train_throughput import reasoning_lengths

    pool = reasoning_lengths(20 * a.steps * 8, a.seq, seed=1)
    lengths, total = [], 0
    for n in pool:
        if total >= a.steps * a.seq * 0.98:
            break
        lengths.append(n - 40)  # the chat template's and the answer's tokens
        total += n
    return synthetic_rows(len(lengths), 0, lengths=lengths)


def result_line(r: dict) -> str:
    return (f"RESULT train_gpu_qwen3_0p6b mode={r['mode']} mfu={100 * r['mfu']:.1f}% tokens_per_s={r['tokens_per_s']} "
            f"peak_mem_gib={r['peak_mem_gib']:.1f} goal=none(reported)")  # fmt: skip


def main() -> None:
    a = parse_args()
    if not a.compare:
        r = run(a)
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(r))
        print(result_line(r))
        return
    # Each mode in a fresh process: the second does not inherit the first's allocator or compiled kernels.
    import subprocess

    rest = [x for x in sys.argv[1:] if x not in ("--compare", "--recipe")]
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for mode, extra in (("bench", []), ("recipe", ["--recipe"])):
            out = Path(d) / f"{mode}.json"
            subprocess.run([sys.executable, __file__, *rest, *extra, "--json-out", str(out)], check=True)
            res[mode] = json.loads(out.read_text())
    b, r = res["bench"], res["recipe"]
    for m in (b, r):
        print(f"{m['mode']:6s}: {m['tokens_per_s']:>7d} tokens/s  MFU {100 * m['mfu']:.1f}%  peak {m['peak_mem_gib']:.1f} GiB"
              f"  ({m['settings']})")  # fmt: skip
    print(f"RESULT train_gpu_qwen3_0p6b recipe_mfu={100 * r['mfu']:.1f}% bench_mfu={100 * b['mfu']:.1f}% "
          f"ratio={r['tokens_per_s'] / b['tokens_per_s']:.2f}x(recipe/bench tokens/s) recipe_peak_mem_gib="
          f"{r['peak_mem_gib']:.1f} goal=none(reported)")  # fmt: skip


def run(a: argparse.Namespace) -> dict:
    """One training run; returns its measurements."""
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
        torch.cuda.max_memory_reserved = lambda: 0
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), 989.0) * 1e12
    t_start = time.perf_counter()

    class Timer(TrainerCallback):
        """A mark after every packed block (gradient-accumulation substeps too); with --profile, a kernel
        table over 3 optimizer steps after warm-up (where the time goes)."""

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

        def on_substep_end(self, args, state, control, **kw):  # noqa: ANN001
            torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.on_substep_end(args, state, control)
            if self.prof is not None and state.global_step == a.warmup_steps + 3:
                self.prof.__exit__(None, None, None)
                key = "self_cpu_time_total" if a.smoke else "self_device_time_total"
                print(self.prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
                self.prof = None

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_params = build_model_dir(tmp / "model", Path(a.tokenizer))
        rows = training_rows(a)
        (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        plan, off = plan_for(tmp / "model", tmp / "train.jsonl", tmp / "out", a)
        init_distributed(plan)
        trainer = build_trainer(plan)
        trainer.add_callback(timer := Timer())
        lens = trainer.train_dataset["seq_lengths"]
        docs = [d for block in lens for d in block]
        tokens_per_block = sum(map(sum, lens)) / len(lens)
        mean_doc = sum(d * d for d in docs) / sum(docs)  # token-weighted: what attention cost scales with
        print(f"{gpu}: {n_params / 1e6:.0f}M params, {len(lens)} blocks of <= {a.seq} tokens, "
              f"{tokens_per_block:.0f} real tokens/block, mean doc {mean_doc:.0f}", flush=True)  # fmt: skip
        trainer.train()
        marks = timer.marks[a.warmup_steps :]
        blocks = len(marks) - 1
        assert blocks > 0, f"{len(timer.marks)} blocks ran, {a.warmup_steps} of them warm-up: raise --steps"
        dt = marks[-1] - marks[0]
        tok_s = blocks * tokens_per_block / dt
        mfu = tok_s * flops_per_token(n_params, mean_doc) / peak
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r] or [float("nan")]
        h = plan["hparams"]
        res = {"mode": "recipe" if a.recipe else "bench", "gpu": gpu, "timed_blocks": blocks, "tokens_per_s": round(tok_s),
               "mfu": round(mfu, 4), "block_s": dt / blocks, "first_loss": losses[0], "final_loss": losses[-1],
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
               "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30, "total_s": time.perf_counter() - t_start,
               "settings": f"seq {a.seq}, {h['attn_implementation']}, liger={h['use_liger_kernel']}, "
                           f"grad_ckpt={h['gradient_checkpointing']}, weights {h['model_dtype']}, grad_accum {h['grad_accum']}",
               "not_as_recipe": off}  # fmt: skip
        print(json.dumps(res), flush=True)
        return res


if __name__ == "__main__":
    main()
