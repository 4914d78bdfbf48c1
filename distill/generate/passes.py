"""Sampling passes: one generate run at several reasoning efforts (or any sampling change) into one set.

ReasonLite's curriculum trains phase 1 on medium-effort traces and phase 2 on high-effort ones, from the
same problems; a pass is the stage's `sampling` with a few values changed, and its samples are numbered on
from the previous pass's, so resume, sharding and curate see one sample set whose `sampling` field says
which pass wrote each row (phase rules select with `by: field, field: sampling.reasoning_effort`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class PassConfig:
    effort: str | None = None  # this pass's sampling.reasoning_effort
    n: int | None = None  # null: the stage's sampling value, for this and every field below
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None  # null: the stage's seed + the pass's index, so passes draw apart
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


def pass_samplings(sampling: DictConfig, passes: list | None) -> list[DictConfig]:
    """The sampling config of each pass; no passes: the stage's sampling alone, unchanged."""
    if not passes:
        return [sampling]
    out = []
    for i, p in enumerate(passes):
        over: dict[str, Any] = {
            k: p[k] for k in ("n", "max_tokens", "temperature", "top_p", "seed") if p.get(k) is not None
        }
        over.setdefault("seed", sampling.seed + i)
        if p.get("effort") is not None:
            over["reasoning_effort"] = p.effort
        if p.get("chat_template_kwargs"):
            over["chat_template_kwargs"] = {**sampling.chat_template_kwargs, **p.chat_template_kwargs}
        out.append(OmegaConf.merge(sampling, over))
    return out


def samples_per_problem(g: DictConfig) -> int:
    return sum(s.n for s in pass_samplings(g.sampling, g.get("passes")))
