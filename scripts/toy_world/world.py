"""The toy world's problems and fixed numbers: seeds, difficulty levels, splits disjoint by expression,
and the teacher's deliberately imperfect step-by-step traces."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import reasoning_gym
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[2]  # scripts/toy_world/world.py -> the repo
OUT = ROOT / "data" / "toy"
SEED = 20261128

# Difficulty knobs: level 2 has more operations and bigger numbers, so the teacher fails it more often.
LEVELS = {
    1: dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1),
    2: dict(min_terms=4, max_terms=5, min_digits=1, max_digits=1),
}
# The teacher is imperfect by construction: each step of its training traces is wrong with this
# probability (and the chain goes on from the wrong value), so its sampled accuracy falls with the number
# of steps and verification has real errors to remove.
STEP_ERROR = 0.15
# "Pre-training": arithmetic facts as plain text (no chat template, no think block). The student starts
# from this base, as a real student starts from a base LM that knows arithmetic but not the format.
FACT_RANGE = range(-45, 46)
SPLIT_SIZES = {"train": 256, "heldout": 64}  # per level
# chain_sum seeds item i with Random(seed + i): seed blocks must be far apart or splits share items.
SEED_BASE = {"heldout": 1_000_000, "train": 2_000_000, "teacher": 3_000_000}
LEVEL_SEED_STRIDE = 400_000

TEACHER_ARCH = dict(
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
)
STUDENT_ARCH = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
BPE_VOCAB = 448  # including the 256 byte alphabet and the 3 special tokens; <think> tokens come on top

ACC_RANGE = (0.40, 0.90)
SAMPLES_PER_PROBLEM = 4
MAX_NEW_TOKENS = 160
TEMPERATURE = 0.8


def log(msg: str) -> None:
    """Progress lines with elapsed time: the build is long enough that silence looks like a hang."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


T0 = time.perf_counter()


# ----------------------------------------------------------------------------------------------- problems


def user_prompt(problem: str) -> str:
    """The exact user prompt the pipeline uses; the teacher is trained on it so it must not drift."""
    return f"{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def chain_sum_items(level: int, split: str, size: int) -> list[dict]:
    """Raw reasoning-gym items for one (level, split) seed block."""
    seed = SEED + SEED_BASE[split] + level * LEVEL_SEED_STRIDE
    return list(reasoning_gym.create_dataset("chain_sum", size=size, seed=seed, **LEVELS[level]))


def take_unique(items: list[dict], n: int, used: set[str]) -> list[dict]:
    """First n items whose expression is not in `used` (and adds them to it): dedup is by expression."""
    out = []
    for item in items:
        expr = item["metadata"]["expression"]
        if expr in used:
            continue
        used.add(expr)
        out.append(item)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} unique expressions, wanted {n}: enlarge the pool")


def build_splits() -> tuple[dict[str, list[dict]], set[str]]:
    """Held-out first, then train, each disjoint by expression; returns rows and every used expression."""
    used: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split in ("heldout", "train"):
        rows = []
        for level in LEVELS:
            items = take_unique(
                chain_sum_items(level, split, 4 * SPLIT_SIZES[split]), SPLIT_SIZES[split], used
            )
            rows += [
                {
                    "problem": it["question"],
                    "answer": it["answer"],
                    "level": level,
                    "category": f"chain_sum-L{level}",
                    "split": split,
                    "_expr": it["metadata"]["expression"],
                }
                for it in items
            ]
        for i, row in enumerate(rows):
            row["id"] = f"toy-{split}-{i:05d}"
        splits[split] = rows
    return splits, used


def write_splits(splits: dict[str, list[dict]], out: Path) -> None:
    """One JSON object per line with exactly the documented keys (the private _expr is dropped)."""
    keys = ("id", "problem", "answer", "level", "category", "split")
    (out / "problems").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(out / "problems" / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps({k: row[k] for k in keys}) + "\n")


def teacher_problems(n_per_level: int, used: set[str]) -> list[dict]:
    """Fresh problems for the teacher's SFT, excluding every train/held-out expression.

    Repeats inside this set are allowed (level 1 has few distinct one-digit sums), only the
    evaluation splits must stay unseen, so its errors on them are real.
    """
    out = []
    for level in LEVELS:
        items = chain_sum_items(level, "teacher", n_per_level)
        out += [it for it in items if it["metadata"]["expression"] not in used]
    random.Random(SEED).shuffle(out)
    return out


def reasoning_steps(expression: str, rng: random.Random | None = None) -> tuple[str, int]:
    """Left-to-right chain, one operation per line: '4 - 1 = 3\\n3 + 5 = 8', and its final value.

    With `rng`, each step is wrong with probability STEP_ERROR (off by 1-2) and the chain continues from
    the wrong value, as a sloppy solver's would.
    """
    tokens = expression.split()
    acc, lines = int(tokens[0]), []
    for op, num in zip(tokens[1::2], tokens[2::2], strict=False):
        new = acc + int(num) if op == "+" else acc - int(num)
        if rng is not None and rng.random() < STEP_ERROR:
            new += rng.choice([-2, -1, 1, 2])
        lines.append(f"{acc} {op} {num} = {new}")
        acc = new
    return "\n".join(lines), acc


def conversation(problem: str, expression: str, answer: str, rng: random.Random | None = None) -> list[dict]:
    """A Qwen3-style thinking conversation: reasoning in <think>, boxed answer after it."""
    assert int(answer) == eval(expression), (expression, answer)  # noqa: S307 (digits and +/- only)
    steps, final = reasoning_steps(expression, rng)
    content = "<think>\n" + steps + "\n</think>\n\n" + f"The answer is \\boxed{{{final}}}."
    return [{"role": "user", "content": user_prompt(problem)}, {"role": "assistant", "content": content}]


def fact_lines(rng: random.Random, n_seqs: int, per_seq: int = 8) -> list[str]:
    """Plain-text arithmetic facts 'a + d = r' (a in FACT_RANGE, d a digit), `per_seq` to a sequence."""
    facts = [
        f"{a} {op} {d} = {a + d if op == '+' else a - d}"
        for a in FACT_RANGE
        for d in range(10)
        for op in "+-"
    ]
    return ["\n".join(rng.choice(facts) for _ in range(per_seq)) + "\n" for _ in range(n_seqs)]


def encode_facts(tok: PreTrainedTokenizerFast, texts: list[str]) -> list[tuple[list[int], int]]:
    """(ids, 0): loss on every token of a fact sequence."""
    return [(ids, 0) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
