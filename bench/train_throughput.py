"""Padding vs the train stage's padding-free path: tokens/s, real-token share, final losses, on the toy student.

    .venv/bin/python bench/train_throughput.py [--data a.jsonl b.jsonl] [--epochs 3] [--seeds 0 1 2]
    .venv/bin/python bench/train_throughput.py --lengths reasoning --block 1024 --rows 240 --layers 2 --epochs 1

Both sides train the same student on the same rows with the same lr schedule, epochs and loss on the
assistant turn only, once per seed (the seed draws the batches), alternating sides:
  * padded: TRL `SFTTrainer` with its plain defaults (no packing, batches padded to their longest row,
    per_device_train_batch_size=8), except gradient checkpointing: off, as the stage has it on CPU, so
    that both sides compute the same activations once (`--padded-grad-ckpt`: TRL's default, on);
  * stage: distill.train.worker.build_trainer. By default `packing=false, padding_free=true`: each step's
    8 rows, re-drawn every epoch, flattened into one row with restarted positions and per-document
    attention, i.e. the padded run's steps and batches without the padding. `--stage-batching packed`
    packs once with BFD into blocks sized for ~8 conversations a step (the default for long traces).
tokens/s counts real (non-pad) tokens over the Trainer's train_runtime, summed over seeds. Final losses:
both trained models on the same held-out rows, tokenised the same way (the stage's template, loss on
the assistant turn), mean and spread over seeds: "equal within noise" means the means differ by less
than twice the standard error of their difference.
Default data: runs/toy/curate/phase{1,2}.jsonl if the toy pipeline ran, else synthetic chain sums.
`--lengths reasoning`: synthetic chain sums whose lengths follow R1 traces' long tail (reasoning_lengths)
up to --block tokens, on a random-init student built wider than the toy one (--hidden, --layers).
The last line is `RESULT train_throughput ratio=...x goal>=1.5x ...` (PASS: all three goals).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
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


# Reasoning-trace lengths, as fractions of the max length: lognormal, median 0.14, sigma 0.7, clipped at 1.
# Shape from published R1 trace statistics: Open-R1 Update #1 (huggingface.co/blog/open-r1/update-1)
# plots R1's response lengths in OpenThoughts: mean ~6,000 tokens, some over 20,000; DeepSeek-R1
# Thoughtology (arXiv 2504.07128) shows R1's thinking-token histograms right-skewed with a tail to the
# 32k cap. Against a 32k max length these parameters give mean 0.18 (5.9k) and 1.9% of rows over 0.6 (20k).
LEN_MEDIAN, LEN_SIGMA = 0.14, 0.7


def reasoning_lengths(n: int, max_len: int, seed: int = 0, floor: int = 48) -> list[int]:
    rng = random.Random(seed)
    return [
        max(floor, min(max_len, int(max_len * LEN_MEDIAN * math.exp(rng.gauss(0, LEN_SIGMA)))))
        for _ in range(n)
    ]


def reasoning_rows(n: int, max_len: int, tok, seed: int = 0) -> list[dict]:
    """Chain sums whose think block re-checks the chain until the row reaches a length drawn from
    `reasoning_lengths`: a short prompt and a long, repetitive response, as in R1 traces."""
    rng = random.Random(seed)
    return [fit(synthetic_rows(1, rng.randint(0, 10**9))[0], t, max_len, tok) for t in reasoning_lengths(n, max_len, seed)]  # fmt: skip


def fit(row: dict, target: int, max_len: int, tok) -> dict:
    """`row` with as many re-checks of its chain as bring it to about `target` tokens, never over max_len."""
    user, asst = (m["content"] for m in row["messages"])
    think, answer = asst.split("\n</think>\n")
    chain = think.removeprefix("<think>\n")

    def conv(checks: int) -> list[dict]:
        body = think + "".join(f"\nWait, let me check that again.\n{chain}" for _ in range(checks))
        return [{"role": "user", "content": user}, {"role": "assistant", "content": f"{body}\n</think>\n{answer}"}]  # fmt: skip

    def size(checks: int) -> int:
        return len(tok.apply_chat_template(conv(checks), return_dict=True)["input_ids"])

    k = max(0, (target - size(0)) // max(1, size(1) - size(0)))
    while k and size(k) > max_len:
        k -= 1
    return {"messages": conv(k)}


def build_student(out: Path, tokenizer_dir: str, hidden: int, layers: int, max_len: int) -> Path:
    """A random-init Qwen3 student (the toy student's architecture, wider and deeper, positions up to
    max_len) with the toy tokenizer: big enough that compute, not per-op overhead, sets the step time."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.model_max_length = max_len
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 32, num_key_value_heads=max(1, hidden // 64), head_dim=32,
        max_position_embeddings=max_len, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


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
    """The train stage's own trainer (world 1): rows_per_step rows a step, or blocks sized to hold as many."""
    from distill.train.stage import default_hparams, worker_plan
    from distill.train.worker import build_trainer, init_distributed

    packed = a.stage_batching == "packed"
    blocks = max(1, math.ceil(rows_per_step * a.mean_len / a.block)) if packed else rows_per_step
    hp = default_hparams(
        epochs=a.epochs, lr=a.lr, per_device_batch_size=blocks, max_length=a.block, packing=packed,
        padding_free=True, seed=a.seed, attn_implementation=a.attn, logging_steps=10, save_steps=10**9,
        save_total_limit=1, progress=False,
    )  # fmt: skip
    plan = worker_plan(phase="bench", init_model=str(student), train_file=train, val_file=val, output_dir=out,
                       hparams=hp, wandb={"enabled": False, "name": "bench"})  # fmt: skip
    init_distributed(plan)
    return build_trainer(plan)


def padded_trainer(student: Path, train: Path, val: Path, out: Path, a: argparse.Namespace):
    """TRL SFTTrainer, plain defaults (padding, batch 8), with only loss masking/schedule made equal, and
    gradient checkpointing as the stage has it on CPU (off) unless --padded-grad-ckpt (TRL's default)."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(student)
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=a.epochs, learning_rate=a.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=0.03, assistant_only_loss=True, use_cpu=True,
        bf16=False, dataloader_pin_memory=False, save_strategy="no", report_to="none", logging_steps=10,
        seed=a.seed, data_seed=a.seed, shuffle_dataset=True, disable_tqdm=True,
        gradient_checkpointing=a.padded_grad_ckpt,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(student, use_safetensors=True, attn_implementation="sdpa")
    ds = {k: load_dataset("json", data_files=str(p), split="train") for k, p in (("t", train), ("v", val))}
    return SFTTrainer(
        model=model, args=args, train_dataset=ds["t"], eval_dataset=ds["v"], processing_class=tok
    )


def held_out_loss(model, student: str, rows: list[dict]) -> float:
    """Mean per-token loss on the assistant turns of `rows`, tokenised by the stage's template for both
    sides: TRL's default template also trains the newline after the end-of-turn token, an easy token that
    would lower one side's own eval loss by ~3.6%."""
    import torch
    import torch.nn.functional as F

    from distill.train.worker import prepare_tokenizer

    tok = prepare_tokenizer(student, "<|im_end|>", "<|endoftext|>")
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for r in rows:
            enc = tok.apply_chat_template(r["messages"], return_dict=True, return_assistant_tokens_mask=True)
            ids = torch.tensor([enc["input_ids"]])
            mask = torch.tensor(enc["assistant_masks"][1:]).bool()
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += float(F.cross_entropy(logits[mask], ids[0, 1:][mask], reduction="sum"))
            count += int(mask.sum())
    return total / count


def measure(trainer, name: str, student: str, val_rows: list[dict], seed: int) -> dict:
    """Trains, then reports real tokens/s, the real-token share of the batches, and the held-out loss."""
    pad = trainer.processing_class.pad_token_id
    real = total = 0
    for batch in trainer.get_train_dataloader():
        ids = batch["input_ids"]
        real += (
            int((ids != pad).sum()) if "attention_mask" not in batch else int(batch["attention_mask"].sum())
        )
        total += ids.numel()
    out = trainer.train()
    runtime = out.metrics["train_runtime"]
    epochs = trainer.args.num_train_epochs
    res = {
        "name": name, "seed": seed, "steps": trainer.state.global_step, "real_tokens": real * epochs,
        "runtime_s": runtime, "tokens_per_s": real * epochs / runtime, "real_share": real / total,
        "held_out_loss": held_out_loss(trainer.model, student, val_rows),
    }  # fmt: skip
    print(json.dumps(res), flush=True)
    return res


def mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5


def report(base: list[dict], ours: list[dict]) -> tuple[float, bool]:
    """Prints the comparison; (tokens/s ratio, whether all three goals hold)."""
    tps = [sum(r["real_tokens"] for r in side) / sum(r["runtime_s"] for r in side) for side in (base, ours)]
    ratio = tps[1] / tps[0]
    share = min(r["real_share"] for r in ours)
    (mb, sb), (mo, so) = (mean_sd([r["held_out_loss"] for r in side]) for side in (base, ours))
    se = ((sb**2 + so**2) / len(base)) ** 0.5
    per_seed = "  ".join(
        f"{o['tokens_per_s'] / b['tokens_per_s']:.2f}x" for b, o in zip(base, ours, strict=True)
    )
    print(f"\nsteps  padded {base[0]['steps']}  stage {ours[0]['steps']}  ({len(base)} seeds)")
    print(f"tokens/s  padded {tps[0]:.0f}  stage {tps[1]:.0f}  ratio {ratio:.2f}x  (per seed: {per_seed})")
    print(f"real-token share  padded {base[0]['real_share']:.1%}  stage {share:.1%}")
    print(
        f"held-out loss  padded {mb:.4f} +- {sb:.4f}  stage {mo:.4f} +- {so:.4f}  (diff {mo - mb:+.4f}, 2 SE {2 * se:.4f})"
    )
    goals = {
        "ratio>=1.5": ratio >= 1.5,
        "share>=97%": share >= 0.97,
        "losses equal within noise": abs(mo - mb) < 2 * se,
    }
    if len(base) > 1:  # the same seed draws the same batches on both sides: the paired view is tighter
        md, sd = mean_sd([o["held_out_loss"] - b["held_out_loss"] for b, o in zip(base, ours, strict=True)])
        print(f"paired loss diff (stage - padded, per seed)  {md:+.4f}, 2 SE {2 * sd / len(base) ** 0.5:.4f}")
    print("goals: " + "  ".join(f"{k} {v}" for k, v in goals.items()))
    return ratio, all(goals.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--student", default=str(REPO / "data" / "toy" / "student"))
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--block", type=int, default=384, help="max_length (>= longest row); packed block length")
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument(
        "--attn", default="varlen_sdpa", help="the stage's attention (varlen_sdpa: per-document SDPA)"
    )
    ap.add_argument("--stage-batching", choices=["padding_free", "packed"], default="padding_free")
    ap.add_argument(
        "--padded-grad-ckpt", action="store_true", help="TRL's default; the stage has it off on CPU"
    )
    ap.add_argument("--lengths", choices=["toy", "reasoning"], default="toy",
                    help="reasoning: synthetic rows with R1-shaped lengths up to --block, on a built student")  # fmt: skip
    ap.add_argument("--hidden", type=int, default=128, help="--lengths reasoning: the student's width")
    ap.add_argument("--layers", type=int, default=4, help="--lengths reasoning: the student's depth")
    a = ap.parse_args()
    import torch
    from accelerate.state import AcceleratorState
    from transformers import AutoTokenizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.lengths == "reasoning":
            a.student = str(build_student(tmp / "student", a.student, a.hidden, a.layers, a.block))
            rows = reasoning_rows(a.rows, a.block, AutoTokenizer.from_pretrained(a.student))
        else:
            rows = load_rows(a.data)
        random.Random(0).shuffle(rows)
        rows = rows[: a.rows]
        n_val = max(16, len(rows) // 10)
        tok = AutoTokenizer.from_pretrained(a.student)
        lens = [len(tok.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]
        a.mean_len = sum(lens) / len(lens)
        a.block = max(a.block, max(lens))
        q = sorted(lens)
        print(f"rows={len(rows)} (val {n_val}) lengths={a.lengths} mean_len={a.mean_len:.0f} median={q[len(q) // 2]} "
              f"p90={q[int(len(q) * 0.9)]} max_len={max(lens)} threads={torch.get_num_threads()} "
              f"stage={a.stage_batching} padded_grad_ckpt={a.padded_grad_ckpt}", flush=True)  # fmt: skip
        base, ours = [], []
        train = write_jsonl(tmp / "train.jsonl", rows[n_val:])
        val = write_jsonl(tmp / "val.jsonl", rows[:n_val])
        for seed in a.seeds:
            a.seed = seed
            trainer = padded_trainer(Path(a.student), train, val, tmp / f"padded{seed}", a)
            base.append(measure(trainer, "trl-padded", a.student, rows[:n_val], seed))
            AcceleratorState._reset_state(reset_partial_state=True)
            trainer = stage_trainer(Path(a.student), train, val, tmp / f"stage{seed}", a, 8)
            ours.append(measure(trainer, f"distill-{a.stage_batching}", a.student, rows[:n_val], seed))
            AcceleratorState._reset_state(reset_partial_state=True)
    ratio, ok = report(base, ours)
    finite = all(math.isfinite(r["held_out_loss"]) for r in base + ours)
    print(f"RESULT train_throughput ratio={ratio:.2f}x goal>=1.5x lengths={a.lengths} "
          f"padded_grad_ckpt={a.padded_grad_ckpt} stage={a.stage_batching} {'PASS' if ok and finite else 'FAIL'}")  # fmt: skip
    if not finite:
        sys.exit(1)


if __name__ == "__main__":
    main()
