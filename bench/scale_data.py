"""Reasoning-shaped synthetic teacher traces for `bench/scale.py`, written where each stage would find them.

The traces are shaped like a reasoning teacher's (a `<think>` block of steps, then a short answer with
`\\boxed{}`): lengths are log-normal (long tail, capped) with a mean of about 10 KB of text, 8 samples a
problem, about half of them right. Words and numbers are drawn at random per sample, so the text neither
repeats itself (curate's repetition filter keeps it) nor compresses better than real prose does (no pool of
sentences shared between rows for zstd to find).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

from distill.engines.chat import split_completion

SAMPLES_PER_PROBLEM = 8
MEAN_CHARS = 10_000
SIGMA = 0.8  # log-normal shape: the longest traces are several times the median
MAX_CHARS = 64_000
WORDS = (
    "so then we get the sum of and is equal to which gives us a total let me check again wait that "
    "means each side must be the product divided by square root factor prime number term series "
    "because since therefore hence thus now next first second third finally consider suppose assume "
    "case both either value values integer integers remainder modulo digit digits count ways choose "
    "triangle circle radius area angle length width height point points line slope equation solve "
    "substitute expand simplify multiply add subtract compare bigger smaller positive negative odd even "
    "x y z n k m a b c f(x) g(n) = + - * / ^ ( ) \\frac{1}{2} \\sqrt{3} \\pi \\cdot \\leq \\geq"
).split()
OPENERS = ("Wait,", "Hmm,", "Let me verify:", "Alternatively,", "Actually,", "Okay, so", "Now,", "Check:")


def _text(rng: random.Random, chars: int) -> str:
    """About `chars` characters of steps: words and numbers at random, a paragraph every ~60 words."""
    words: list[str] = []
    n = 0
    while n < chars:
        para = rng.choices(WORDS, k=60)
        for i in rng.sample(range(60), 8):
            para[i] = str(rng.randint(0, 9999))
        para[0] = rng.choice(OPENERS)
        line = " ".join(para) + "."
        words.append(line)
        n += len(line) + 2
    return "\n\n".join(words)[:chars]


def _length(rng: random.Random) -> int:
    median = MEAN_CHARS / math.exp(SIGMA**2 / 2)
    return min(MAX_CHARS, max(200, int(rng.lognormvariate(math.log(median), SIGMA))))


def problems(n_problems: int, seed: int = 0) -> list[dict]:
    """Problem rows in the toy world's file shape (id, problem, answer, level, category)."""
    rng = random.Random(seed)
    out = []
    for i in range(n_problems):
        body = " ".join(rng.choices(WORDS, k=30)) + f" {rng.randint(10, 99999)}"
        out.append({"id": f"scale-{i:07d}", "problem": f"Find the value: {body}?",
                    "answer": str(rng.randint(1, 999)), "level": 1 + i % 5, "category": f"cat{i % 7}"})  # fmt: skip
    return out


def _completion(rng: random.Random, answer: str) -> tuple[str, str, int]:
    """(completion, finish_reason, completion_tokens): half right, ~40% wrong, ~10% cut off mid-thought."""
    u = rng.random()
    think = _text(rng, _length(rng))
    if u < 0.1:
        return f"<think>\n{think}", "length", len(think) // 4
    said = answer if u < 0.6 else str(int(answer) + rng.randint(1, 50))
    tail = f"The steps above give the result.\n\nThe answer is $\\boxed{{{said}}}$."
    comp = f"<think>\n{think}\n</think>\n\n{tail}"
    return comp, "stop", len(comp) // 4


def samples(problem_rows: list[dict], seed: int = 0) -> Iterator[dict]:
    """Every problem's samples in generate's row schema (`problem_rows` as `load_problems` returns them)."""
    for p in problem_rows:
        rng = random.Random(f"{seed}:{p['problem_id']}")  # a problem's samples do not depend on its shard
        prompt = f"Solve the problem. Put the final answer in \\boxed{{}}.\n\n{p['problem']}"
        for i in range(SAMPLES_PER_PROBLEM):
            comp, finish, tokens = _completion(rng, p["answer"])
            reasoning, response = split_completion(comp)
            yield {**p, "sample_idx": i, "prompt": prompt, "completion": comp, "reasoning": reasoning,
                   "response": response, "finish_reason": finish, "prompt_tokens": len(prompt) // 4,
                   "completion_tokens": tokens, "teacher": "synthetic-teacher",
                   "sampling": {"n": SAMPLES_PER_PROBLEM, "temperature": 0.8, "seed": 0}}  # fmt: skip


def write_problems(path: Path, n_problems: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in problems(n_problems):
            f.write(json.dumps(p) + "\n")
