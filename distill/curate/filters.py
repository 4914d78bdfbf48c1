"""Per-sample filters of the curate stage: each returns the first reason to drop a row, before any step
that looks across samples (dedup, verdicts, selection), so the funnel counts each row once."""

from __future__ import annotations

from omegaconf import DictConfig

from distill.curate.answers import extract_answer
from distill.engines.formats import format_rejection


def repetition(text: str, n: int) -> float:
    words = text.split()
    if len(words) <= n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def _bad_text(row: dict) -> str | None:
    for k in ("completion", "prompt"):
        s = row[k]
        if not s.strip():
            return f"empty {k}"
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return f"{k} is not valid UTF-8 (lone surrogate)"
        if "\ufffd" in s:
            return f"{k} has U+FFFD (text lost in a decode)"
    return None


def row_filters(row: dict, c: DictConfig) -> tuple[str | None, str | None]:
    """The first per-sample reason to drop a row (before any cross-sample step), and its detail."""
    if bad := _bad_text(row):
        return "invalid_text", bad
    f = c.filters
    if f.drop_truncated and row["finish_reason"] == "length":
        return "truncated", "finish_reason=length"
    if (fmt := format_rejection(row))[0]:
        return fmt
    ext = extract_answer(row["completion"], list(c.answer.extractors), c.answer.require_think)
    row["extracted_answer"], row["answer_method"] = ext.answer, ext.method
    if ext.problem:
        return ext.problem, ext.detail
    toks = row["completion_tokens"]
    if toks < f.min_completion_tokens:
        return "too_short", f"{toks} < {f.min_completion_tokens} tokens"
    if f.max_completion_tokens is not None and toks > f.max_completion_tokens:
        return "too_long", f"{toks} > {f.max_completion_tokens} tokens"
    if f.max_repetition is not None:
        rep = repetition(row["completion"], f.repetition_ngram)
        if rep > f.max_repetition:
            return "repetition", f"repeated {f.repetition_ngram}-gram share {rep:.2f}"
    return None, None
