"""The curate funnel: every input row counted once, at the first step that dropped it (JSON + PNG).

The step order is the order of the stage's checks, so `remaining` after each step is what a user would
see if the pipeline stopped there; kept + rejected always equals the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from distill.engines.formats import FORMAT_PROBLEMS

STEPS = (
    "unencodable_text",
    "invalid_text",
    "truncated",
    *FORMAT_PROBLEMS,  # a teacher's format that cannot become a pair (a commentary channel, a tool call)
    "bad_think",
    "no_answer",
    "too_short",
    "too_long",
    "repetition",
    "over_max_length",  # longer than train's max_length in the student's tokens (distill.curate.lengths)
    "duplicate_problem",
    "near_duplicate_problem",
    "contaminated",
    "unverified",
    "wrong",
    "duplicate_trace",
    "over_k",
    "no_phase",
)


def funnel(
    n_input: int, reasons: Mapping[str, int] | list[str | None], phase_counts: dict[str, int], extra: dict
) -> dict:
    """Counts per step in pipeline order; `remaining` after each step; kept + rejected == input.
    `reasons`: each row's reason (None: kept), or the count of rows per reason."""
    counts = {s: 0 for s in STEPS}
    if isinstance(reasons, Mapping):
        for r, n in reasons.items():
            counts[r] += n
    else:
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


def count_values(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def summary_rows(f: dict) -> dict:
    """The funnel as the rows of curate's end-of-stage table: only the steps that removed something."""
    rows = {"input samples": f["input"]}
    for s in f["steps"]:
        if s["removed"]:
            rows[f"- {s['step']}"] = f"-{s['removed']} -> {s['remaining']}"
    rows["kept"] = f["kept"]
    rows.update({f"phase {k}": v for k, v in f["phases"].items()})
    rows.update({f"verdict {k}": v for k, v in f["verdicts"].items()})
    rows["problems in/kept"] = f"{f['problems']['input']}/{f['problems']['kept']}"
    return rows
