"""Second opinions on verdicts: majority-vote pseudo-labels and an optional LLM judge.

Pseudo-labels (ReasonLite): where a problem has no usable reference, or its samples overwhelmingly agree
on an answer the reference rejects, the top answer stands in for the reference if it has at least
`min_votes` votes and `min_share` of the answered samples. The judge (any generate engine) re-checks the
samples whose verdict is `null` or `false`; its reply is recorded on the row, and a clear CORRECT or
INCORRECT replaces the verdict, with `verdict_source: judge`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from distill.core.config import ModelRef
from distill.engines.base import EngineConfig, SamplingConfig

JUDGE_PROMPT = (
    "Decide whether a student's final answer to a math problem is equivalent to the reference answer.\n\n"
    "Problem: {problem}\nReference answer: {reference}\nStudent answer: {prediction}\n\n"
    "Reply with one word: CORRECT or INCORRECT."
)


@dataclass
class PseudoLabelConfig:
    enabled: bool = False
    min_share: float = 0.9
    min_votes: int = 4
    for_missing: bool = True  # no reference, or one math-verify cannot parse
    for_disputed: bool = False  # the reference rejects a top answer that meets the thresholds


@dataclass
class JudgeConfig:
    enabled: bool = False
    recheck: list[str] = field(default_factory=lambda: ["null", "false"])
    model: ModelRef | None = None  # None: the run's teacher
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(backend="hf"))
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=1, temperature=0.0, max_tokens=64)
    )
    prompt: str = JUDGE_PROMPT


def majority(answers: list[str], min_share: float, min_votes: int) -> str | None:
    """The top answer if it meets both thresholds (ties: none)."""
    if not answers:
        return None
    top = Counter(answers).most_common(2)
    votes = top[0][1]
    if len(top) > 1 and top[1][1] == votes:
        return None
    return top[0][0] if votes >= min_votes and votes / len(answers) >= min_share else None


def pseudo_references(rows: list[dict], cfg: PseudoLabelConfig) -> dict[str, str]:
    """problem id -> pseudo reference, for the problems that need and have one."""
    by_pid: dict[str, list[dict]] = {}
    for r in rows:
        by_pid.setdefault(r["problem_id"], []).append(r)
    out = {}
    for pid, rs in by_pid.items():
        answered = [r for r in rs if r["extracted_answer"] is not None]
        top = majority([r["extracted_answer"] for r in answered], cfg.min_share, cfg.min_votes)
        if top is None:
            continue
        verdicts = [r["verdict"] for r in answered if r["extracted_answer"] == top]
        missing = all(v is None for v in verdicts) and (rs[0]["answer"] is None or rs[0]["ref_unparsed"])
        disputed = verdicts and all(v is False for v in verdicts)
        if (missing and cfg.for_missing) or (disputed and cfg.for_disputed):
            out[pid] = top
    return out


def parse_judgement(text: str) -> bool | None:
    """The judge's last CORRECT / INCORRECT after any think block; None if it gave neither."""
    tail = text.rsplit("</think>", 1)[-1]
    hits = re.findall(r"\b(INCORRECT|CORRECT)\b", tail, flags=re.IGNORECASE)
    return None if not hits else hits[-1].upper() == "CORRECT"


def judge_rows(rows: list[dict], cfg: JudgeConfig, engine) -> int:
    """Asks `engine` about each row (in place); returns how many verdicts the judge decided."""
    from distill.engines import Request, problem_seed
    from distill.engines.chat import messages_for

    if not rows:
        return 0
    reqs = []
    for r in rows:
        text = cfg.prompt.format(
            problem=r["problem"], reference=r["reference_used"], prediction=r["extracted_answer"]
        )
        key = f"{r['problem_id']}#{r['sample_idx']}"
        reqs.append(Request(key, messages_for(text, "{problem}"), 1, problem_seed(cfg.sampling.seed, key)))
    outs = engine.generate(reqs, cfg.sampling)
    decided = 0
    for r, comps in zip(rows, outs, strict=True):
        text = comps[0].text if comps else ""
        v = parse_judgement(text)
        r["judge_output"], r["judge_verdict"] = text, v
        if v is not None:
            r["verdict"], r["verdict_source"] = v, "judge"
            decided += 1
    return decided
