"""Decontamination: word n-gram overlap of training problems with evaluation sets.

A problem shares an n-gram with an eval item -> it is removed and listed with the item it matched. Texts
shorter than n tokens are compared whole (an 8-gram test can never fire on a 6-word problem otherwise).
N-grams that occur in many eval items (`max_item_share`) are boilerplate of a templated set ("state the
final answer to the following arithmetic problem"), not evidence of a leak, and are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from distill.core.config import ProblemSource
from distill.core.paths import Paths
from distill.core.problems import load_problems, source_fingerprint
from distill.curate.dedup import tokens


def ngrams(toks: list[str], n: int) -> set[str]:
    if len(toks) < n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


@dataclass
class EvalIndex:
    n: int
    grams: dict[str, tuple[str, str]]  # n-gram -> (eval set, item id): the first item that has it
    items: int
    ignored_grams: int

    def match(self, text: str) -> dict | None:
        for g in sorted(ngrams(tokens(text), self.n)):
            if g in self.grams:
                name, item = self.grams[g]
                return {"eval_set": name, "eval_id": item, "ngram": g}
        return None


def build_index(eval_sets: dict[str, list[dict]], n: int, max_item_share: float | None = None) -> EvalIndex:
    """An n-gram index over every item of every eval set (problem text only)."""
    first: dict[str, tuple[str, str]] = {}
    df: dict[str, int] = defaultdict(int)
    total = 0
    for name, items in eval_sets.items():
        for it in items:
            total += 1
            for g in ngrams(tokens(it["problem"]), n):
                df[g] += 1
                first.setdefault(g, (name, it["problem_id"]))
    ignored = 0
    if max_item_share is not None and total >= 10:
        limit = max_item_share * total
        for g in [g for g, c in df.items() if c > limit]:
            del first[g]
            ignored += 1
    return EvalIndex(n, first, total, ignored)


def load_eval_sets(
    sources: dict[str, ProblemSource], paths: Paths
) -> tuple[dict[str, list[dict]], list[dict]]:
    """All eval sets and their input records. One that cannot be read is an error, never skipped."""
    sets, inputs = {}, []
    for name, src in sources.items():
        try:
            sets[name] = load_problems(src, paths)
            fp = source_fingerprint(src, paths)
        except Exception as e:
            raise RuntimeError(
                f"decontamination eval set {name!r} ({src.path or src.dataset}) cannot be read: {e}"
            ) from e
        if not sets[name]:
            raise RuntimeError(f"decontamination eval set {name!r} is empty")
        inputs.append({**fp, "name": f"eval:{name}"})
    return sets, inputs


def contaminated(problems: list[tuple[str, str]], index: EvalIndex) -> dict[str, dict]:
    """problem id -> the eval item it overlaps (first n-gram in sorted order, for stable reports)."""
    out = {}
    for pid, text in problems:
        if hit := index.match(text):
            out[pid] = hit
    return out
