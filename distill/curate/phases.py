"""Curriculum phases, the validation split, and the training pairs each phase file holds.

Phases are rules over kept samples, each evaluated independently, so both common recipes fit: ReasonLite
(phase 1 short traces, phase 2 long ones: disjoint `length` bounds, or the teacher's reasoning budget via
`field`) and Light-R1 (phase 2 the hardest problems: a `difficulty` bound on a subset of phase 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass
class PhaseRule:
    name: str = "phase1"
    by: str = "all"  # all | length (completion_tokens) | difficulty (pass_rate) | field
    min: float | None = None  # inclusive bounds on the measure
    max: float | None = None
    field: str | None = None  # by=field: a dotted path into the sample, e.g. sampling.reasoning_effort
    values: list[Any] = dataclasses.field(
        default_factory=list
    )  # by=field: the values that belong to this phase


def _get(row: dict, dotted: str) -> Any:
    cur: Any = row
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def matches(rule: PhaseRule, row: dict) -> bool:
    if rule.by == "all":
        return True
    if rule.by == "field":
        if not rule.field:
            raise ValueError(f"phase {rule.name}: by=field needs `field`")
        return _get(row, rule.field) in list(rule.values)
    if rule.by not in ("length", "difficulty"):
        raise ValueError(f"phase {rule.name}: by={rule.by!r} is not one of all|length|difficulty|field")
    x = row["completion_tokens"] if rule.by == "length" else row["pass_rate"]
    if x is None:
        return False
    return (rule.min is None or x >= rule.min) and (rule.max is None or x <= rule.max)


def is_val(problem_id: str, fraction: float, seed: int) -> bool:
    """A stable per-problem draw, so no problem has samples on both sides of the split."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:12], 16)
    return h / 16**12 < fraction


def train_pair(row: dict, phase: str, meta_keys: list[str]) -> dict:
    """A TRL conversational row; the assistant turn keeps its think block (the chat template splits it)."""
    pair = {
        "messages": [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ],
        "problem_id": row["problem_id"],
        "sample_idx": row["sample_idx"],
        "phase": phase,
        "pass_rate": row["pass_rate"],
        "completion_tokens": row["completion_tokens"],
        "prompt_tokens": row["prompt_tokens"],
        "answer": row["answer"],
        "extracted_answer": row["extracted_answer"],
        "verdict_source": row["verdict_source"],
        "teacher": row["teacher"],
        "student_tokens": row.get("student_tokens"),  # what train counts (distill.curate.lengths)
    }
    for k in meta_keys:
        pair[k.rsplit(".", 1)[-1]] = _get(row, k)
    return pair
