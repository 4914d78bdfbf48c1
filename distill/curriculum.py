"""Curriculum phases, the validation split, training pairs, and the funnel (JSON + PNG).

Phases are rules over kept samples, each evaluated independently, so both common recipes fit: ReasonLite
(phase 1 short traces, phase 2 long ones: disjoint `length` bounds, or the teacher's reasoning budget via
`field`) and Light-R1 (phase 2 the hardest problems: a `difficulty` bound on a subset of phase 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEPS = (
    "invalid_text",
    "truncated",
    "bad_think",
    "no_answer",
    "too_short",
    "too_long",
    "repetition",
    "duplicate_problem",
    "near_duplicate_problem",
    "contaminated",
    "unverified",
    "wrong",
    "duplicate_trace",
    "over_k",
    "no_phase",
)


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
    }
    for k in meta_keys:
        pair[k.rsplit(".", 1)[-1]] = _get(row, k)
    return pair


def funnel(n_input: int, reasons: list[str | None], phase_counts: dict[str, int], extra: dict) -> dict:
    """Counts per step in pipeline order; `remaining` after each step; kept + rejected == input."""
    counts = {s: 0 for s in STEPS}
    for r in reasons:
        if r is not None:
            counts[r] += 1
    steps, left = [], n_input
    for s in STEPS:
        left -= counts[s]
        steps.append({"step": s, "removed": counts[s], "remaining": left})
    kept = n_input - sum(counts.values())
    return {
        "input": n_input,
        "steps": steps,
        "kept": kept,
        "rejected": n_input - kept,
        "phases": phase_counts,
        **extra,
    }


def plot_funnel(f: dict, path: Path, title: str = "curate funnel") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["input"] + [s["step"] for s in f["steps"]] + [f"phase:{p}" for p in f["phases"]]
    values = [f["input"]] + [s["remaining"] for s in f["steps"]] + list(f["phases"].values())
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.2))
    bars = ax.barh(
        range(len(labels)),
        values,
        color=["#4c72b0"] * (len(labels) - len(f["phases"])) + ["#55a868"] * len(f["phases"]),
    )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("samples remaining")
    ax.set_title(title)
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v}", va="center", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
