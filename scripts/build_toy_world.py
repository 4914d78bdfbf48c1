"""Build the deterministic "toy world" under data/toy/ that tests and smoke runs use on CPU.

The pipeline needs a teacher that is competent but not perfect (so curation has wrong samples to drop),
a much smaller untrained student, a tokenizer/chat template that behaves like Qwen3's (so TRL and vLLM
treat it like the real thing), and problem splits that never leak into the teacher's own training data.
Everything here is generated from fixed seeds, so rerunning gives the same problems and a teacher of the
same quality.

    .venv/bin/python scripts/build_toy_world.py            # writes data/toy/, exits 1 if the gate fails
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from toy_world.check import accuracy_report, sample
from toy_world.model import encode_conversations, make_model, n_params, save_model_dir, train
from toy_world.tokenizer import build_tokenizer, tokenizer_corpus
from toy_world.world import (
    ACC_RANGE,
    LEVELS,
    OUT,
    SAMPLES_PER_PROBLEM,
    SEED,
    STEP_ERROR,
    STUDENT_ARCH,
    T0,
    TEACHER_ARCH,
    TEMPERATURE,
    build_splits,
    conversation,
    encode_facts,
    fact_lines,
    log,
    reasoning_steps,
    teacher_problems,
    user_prompt,
    write_splits,
)  # fmt: skip
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

# ------------------------------------------------------------------------------------------------ driver


def parse_args() -> argparse.Namespace:
    """Defaults are the tuned values; the flags exist for re-tuning into a scratch --out."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    # A second, cooler pass over the same data: the first pass alone left the teacher at 35% (<40%).
    ap.add_argument("--extra-steps", type=int, default=400)
    ap.add_argument("--extra-lr", type=float, default=1.5e-3)
    ap.add_argument("--student-steps", type=int, default=800)
    # The harmony teacher (scripts/toy_world/harmony.py), fine-tuned from the saved toy teacher.
    ap.add_argument("--harmony-only", action="store_true", help="build only harmony_teacher/ from teacher/")
    ap.add_argument("--harmony-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)  # 1 on a machine shared with other jobs
    return ap.parse_args()


def build_harmony_teacher(args, out: Path, splits: dict, used: set[str]) -> dict:
    """harmony_teacher/: the toy teacher re-taught gpt-oss's harmony format at two efforts; gated on the
    saved files: nearly every completion parses as harmony, and high effort writes longer traces."""
    from toy_world import harmony as toy_harmony

    tok = toy_harmony.harmony_tokenizer(out / "tokenizer")
    problems = teacher_problems(args.harmony_steps * 16 // len(LEVELS) + 16, used)
    ex = toy_harmony.examples(tok, problems, reasoning_steps, user_prompt, SEED + 11)
    log(f"harmony: {len(ex)} conversations, median {sorted(len(i) for i, _ in ex)[len(ex) // 2]} tokens")
    model = toy_harmony.init_from(out / "teacher", tok)
    loss = train(model, ex, args.harmony_steps, 16, 2e-3, tok.pad_token_id)
    toy_harmony.save(model, tok, out / "harmony_teacher")
    report = toy_harmony.check(out / "harmony_teacher", splits["heldout"][::16], user_prompt)
    report.update(steps=args.harmony_steps, final_loss=round(loss, 4))
    log(f"harmony teacher: {report}")
    m, h = report["medium"], report["high"]
    assert min(m["well_formed"], h["well_formed"]) >= 0.9 and h["mean_tokens"] > 1.3 * m["mean_tokens"], (
        report
    )
    return report


def build_teacher_data(args, used: set[str]) -> tuple[PreTrainedTokenizerFast, list]:
    """Teacher SFT conversations, the tokenizer trained on them, and their encodings."""
    n_per_level = args.steps * args.batch_size // len(LEVELS) + args.batch_size
    problems = teacher_problems(n_per_level, used)
    rng = random.Random(SEED + 7)
    convs = [conversation(p["question"], p["metadata"]["expression"], p["answer"], rng) for p in problems]
    log(f"{len(convs)} teacher SFT conversations (train/held-out expressions excluded)")
    facts = fact_lines(random.Random(SEED + 8), 2000)
    tok = build_tokenizer(tokenizer_corpus(convs[:5000]) + facts[:500])
    log(f"tokenizer: {len(tok)} tokens")
    examples = encode_conversations(tok, convs) + encode_facts(tok, facts[: len(convs) // 3])
    lengths = sorted(len(ids) for ids, _ in examples)
    log(f"encoded; tokens per conversation median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    return tok, examples


def evaluate_saved_teacher(path: Path, heldout: list[dict]) -> dict:
    """Gate on the files as saved (not the in-memory model), so the report describes the artifact."""
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    samples = sample(model, tok, heldout, SAMPLES_PER_PROBLEM)
    for row, ss in list(zip(heldout, samples, strict=False))[:: len(heldout) // 4][:4]:
        log(f"{row['problem'].split(': ')[-1]} {row['answer']} -> {ss[0]!r}")
    return accuracy_report(heldout, samples)


def write_docs(out: Path, report: dict) -> None:
    """build_report.json (machine-readable) and a short README generated from the same numbers."""
    (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    acc = report["teacher_heldout"]
    t, s = report["params"]["teacher"], report["params"]["student"]
    (out / "README.md").write_text(f"""# Toy world

Deterministic CPU-sized stand-ins for the real distillation setup. Rebuild (same seed, ~{report["build_seconds"] / 60:.0f} min
on 2 CPU cores) with:

    .venv/bin/python scripts/build_toy_world.py

- `problems/train.jsonl` ({report["problems"]["train"]} rows), `problems/heldout.jsonl` ({report["problems"]["heldout"]} rows):
  reasoning-gym `chain_sum`, level 1 = {LEVELS[1]["min_terms"]}-{LEVELS[1]["max_terms"]} terms of {LEVELS[1]["min_digits"]}-{LEVELS[1]["max_digits"]} digits,
  level 2 = {LEVELS[2]["min_terms"]}-{LEVELS[2]["max_terms"]} terms of {LEVELS[2]["min_digits"]}-{LEVELS[2]["max_digits"]} digits, half of each split per level. Splits are disjoint
  by expression, and the teacher never trained on any expression in either.
- `tokenizer/`: byte-level BPE ({report["vocab_size"]} tokens, one token per digit), Qwen3 special tokens
  (`<|im_end|>` = eos, `<|endoftext|>` = pad, `<think>`/`</think>` added but not special) and TRL's exact
  Qwen3 chat template.
- `teacher/`: Qwen3ForCausalLM, {t:,} parameters, trained from scratch ({report["teacher_training"]["steps"]} + {report["teacher_training"]["extra_steps"]} steps x
  {report["teacher_training"]["batch_size"]}) on `<think>` step-by-step chains for the prompt
  `"{{problem}}\\nPlease reason step by step, and put your final answer within \\\\boxed{{}}."`, mixed with plain
  arithmetic facts. It is imperfect by construction: each step of its training traces is wrong with
  probability {STEP_ERROR} (the chain continues from the wrong value), so it makes real, verifiable mistakes.
- `student/`: Qwen3ForCausalLM, {s:,} parameters ({t / s:.1f}x fewer): the "base model". Pre-trained only on
  plain-text arithmetic facts (`-4 + 6 = 2`, {report["teacher_training"]["student_fact_steps"]} steps), never on the chat format, `<think>` blocks
  or chains, as a real student starts from a base LM that knows arithmetic but not the reasoning format.

Teacher on the held-out split, {acc["samples_per_problem"]} samples per problem, temperature {TEMPERATURE}, top_p 1.0:
accuracy {acc["accuracy_overall"]:.3f} overall, {acc["accuracy_level1"]:.3f} level 1, {acc["accuracy_level2"]:.3f} level 2;
well-formed (`<think>...</think>` then `\\boxed{{}}`) {acc["well_formed_rate"]:.3f}. Details: `build_report.json`.
""")


def main() -> int:
    """Build everything, then gate on the saved teacher's sampled held-out accuracy."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    splits, used = build_splits()
    if args.harmony_only:
        report = json.loads((out / "build_report.json").read_text())
        report["harmony_teacher"] = build_harmony_teacher(args, out, splits, used)
        (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    write_splits(splits, out)
    log(f"problems: train {len(splits['train'])}, heldout {len(splits['heldout'])}")
    tok, examples = build_teacher_data(args, used)
    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    tok.save_pretrained(out / "tokenizer")

    teacher = make_model(TEACHER_ARCH, tok, seed=SEED)
    student = make_model(STUDENT_ARCH, tok, seed=SEED + 1)
    params = {"teacher": n_params(teacher), "student": n_params(student)}
    log(f"params {params}")
    assert params["teacher"] >= 10 * params["student"], params
    facts = encode_facts(tok, fact_lines(random.Random(SEED + 9), 20000))
    student_loss = train(student, facts, args.student_steps, 64, 3e-3, tok.pad_token_id)
    log(f"student base (facts only) loss {student_loss:.4f}")
    save_model_dir(student, tok, out / "student")
    final_loss = train(teacher, examples, args.steps, args.batch_size, args.lr, tok.pad_token_id)
    if args.extra_steps:
        final_loss = train(
            teacher, examples, args.extra_steps, args.batch_size, args.extra_lr, tok.pad_token_id
        )
    save_model_dir(teacher, tok, out / "teacher")

    acc = evaluate_saved_teacher(out / "teacher", splits["heldout"])
    report = {
        "seed": SEED,
        "params": params,
        "vocab_size": len(tok),
        "teacher_heldout": acc,
        "problems": {k: len(v) for k, v in splits.items()},
        "levels": LEVELS,
        "teacher_training": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "extra_steps": args.extra_steps,
            "extra_lr": args.extra_lr,
            "step_error": STEP_ERROR,
            "student_fact_steps": args.student_steps,
            "conversations": len(examples),
            "final_loss": round(final_loss, 4),
        },
        "build_seconds": round(time.perf_counter() - T0, 1),
    }
    report["harmony_teacher"] = build_harmony_teacher(args, out, splits, used)
    write_docs(out, report)
    log(json.dumps(acc))
    ok = ACC_RANGE[0] <= acc["accuracy_overall"] <= ACC_RANGE[1]
    log(f"gate {ACC_RANGE}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
