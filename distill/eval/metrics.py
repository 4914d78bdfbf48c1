"""Sampling metrics over k samples per problem: avg@k, unbiased pass@k, cons@k, and token statistics.

pass@k uses the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), so that k < n samples
still give an unbiased number; cons@k is a majority vote over the extracted answers (ties broken by the
first answer to reach the top count, so the result does not depend on dict ordering).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common non-empty answer; the earliest one wins a tie."""
    votes = Counter(a for a in answers if a)
    if not votes:
        return None
    top = max(votes.values())
    return next(a for a in answers if a and votes[a] == top)


def problem_scores(correct: Sequence[bool | None], answers: Sequence[str | None], k: int) -> dict:
    """Scores of one problem's samples. `None` verdicts (unparseable) count as not correct here:
    for a model under evaluation an answer that cannot be read is a miss."""
    n = len(correct)
    c = sum(1 for v in correct if v)
    maj = majority(answers)
    maj_correct = bool(maj) and any(v for a, v in zip(answers, correct, strict=True) if a == maj)
    return {"avg": c / n, "pass": pass_at_k(n, c, min(k, n)), "cons": float(maj_correct)}


def summarize(
    per_problem: list[dict],
    tokens: Sequence[int],
    truncated: Sequence[bool],
    prompt_tokens: Sequence[int] = (),
) -> dict:
    m = len(per_problem)
    return {
        "problems": m,
        "samples": len(tokens),
        "avg@k": sum(p["avg"] for p in per_problem) / m if m else 0.0,
        "pass@k": sum(p["pass"] for p in per_problem) / m if m else 0.0,
        "cons@k": sum(p["cons"] for p in per_problem) / m if m else 0.0,
        "mean_tokens": statistics.fmean(tokens) if tokens else 0.0,
        "median_tokens": statistics.median(tokens) if tokens else 0.0,
        "truncation_rate": sum(truncated) / len(truncated) if truncated else 0.0,
        "mean_prompt_tokens": statistics.fmean(prompt_tokens) if prompt_tokens else 0.0,
    }
