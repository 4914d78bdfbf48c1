"""Dedup and decontamination catch planted copies that differ in whitespace, case and punctuation."""

from __future__ import annotations

import random

from distill.curate.decontam import build_index, contaminated
from distill.curate.dedup import dedup_problems, normalize, select_samples

WORDS = "alpha beta gamma delta triangle circle radius integer prime sum product ratio area angle".split()


def _problems(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [
        (f"p{i}", " ".join(rng.choice(WORDS) for _ in range(20)) + f" with {rng.randint(10, 10**6)} units.")
        for i in range(n)
    ]


def _mangle(text: str, rng: random.Random) -> str:
    words = text.split()
    out = [w.upper() if rng.random() < 0.3 else w for w in words]
    out = [w + rng.choice([",", ";", "", "?", "."]) for w in out]
    return "   " + "\n ".join(out) + "  ?"


def test_normalize_keeps_math_but_not_punctuation():
    assert normalize("What is  4 - 1?") == normalize("what IS 4 - 1") != normalize("what is 4 + 1")


def test_exact_and_near_duplicates_planted():
    rng = random.Random(1)
    base = _problems(200)
    planted = {f"x{i}": base[i * 7][0] for i in range(20)}
    probs = base + [(k, _mangle(dict(base)[v], rng)) for k, v in planted.items()]
    near = {f"n{i}": base[i * 5 + 1][0] for i in range(10)}  # one word changed of ~22
    for k, v in near.items():
        words = dict(base)[v].split()
        words[3] = "zeta"
        probs.append((k, " ".join(words)))
    dups = dedup_problems(probs, threshold=0.7, shingle=2)
    assert {k: d["duplicate_of"] for k, d in dups.items() if d["reason"] == "duplicate_problem"} == planted
    got_near = {k: d["duplicate_of"] for k, d in dups.items() if d["reason"] == "near_duplicate_problem"}
    assert got_near == near


def test_decontamination_planted():
    rng = random.Random(2)
    evals = [{"problem_id": f"e{i}", "problem": t} for i, (_, t) in enumerate(_problems(50, seed=9))]
    train = _problems(300, seed=3)
    planted = {f"c{i}": f"e{i * 3}" for i in range(12)}
    for k, v in planted.items():
        text = evals[int(v[1:])]["problem"]
        train.append((k, "Solve: " + _mangle(text, rng) + " Then explain."))
    index = build_index({"bench": evals}, n=8)
    hits = contaminated(train, index)
    assert {k: h["eval_id"] for k, h in hits.items()} == planted
    assert all(h["eval_set"] == "bench" for h in hits.values())


def test_short_texts_compared_whole_and_boilerplate_ignored():
    evals = [
        {"problem_id": f"e{i}", "problem": f"State the final answer: {i} + {i + 1} ="} for i in range(40)
    ]
    index = build_index({"h": evals}, n=32, max_item_share=0.5)
    assert contaminated(
        [("a", "state the FINAL answer  3 + 4 ="), ("b", "State the final answer: 3 + 5 =")], index
    ) == {"a": {"eval_set": "h", "eval_id": "e3", "ngram": "state the final answer 3 + 4 ="}}
    idx8 = build_index({"h": evals}, n=4, max_item_share=0.5)
    assert idx8.ignored_grams > 0 and not contaminated([("b", "State the final answer: 99 + 98 =")], idx8)


def test_select_samples_prefers_distinct_traces():
    rows = [{"sample_idx": i, "completion": c} for i, c in enumerate(["a b", "A  b", "c", "d", "e"])]
    assert select_samples(rows, 3) == {1: "duplicate_trace", 4: "over_k"}
    assert select_samples(rows, None) == {1: "duplicate_trace"}
