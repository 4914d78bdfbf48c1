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


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _escape(x, where: str, bad: list[str]):  # noqa: ANN001, ANN202 (any JSON value)
    """`x` with every string that UTF-8 cannot hold (a lone surrogate) escaped as `\\udXXX`; names in `bad`."""
    if isinstance(x, str):
        if x.isascii() or _encodable(x):
            return x
        bad.append(where)
        return x.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(x, dict):
        return {
            _escape(k, where, []): _escape(v, f"{where}.{k}" if where else str(k), bad) for k, v in x.items()
        }
    if isinstance(x, list):
        return [_escape(v, f"{where}[{i}]", bad) for i, v in enumerate(x)]
    return x


def unencodable_fields(row: dict) -> list[str]:
    """Escapes, in place, every field (problem, answer, prompt, completion, meta...) that cannot be written
    as UTF-8, and names them. A JSON file can carry a lone surrogate (`"\\ud800"`); left in the row it
    would kill the writer after every other step, losing the whole run, so the row is rejected and
    written with the escape instead."""
    bad: list[str] = []
    for k, v in list(row.items()):
        row[k] = _escape(v, k, bad)
    return bad


def _bad_text(row: dict) -> str | None:
    for k in ("completion", "prompt"):
        s = row[k]
        if not s.strip():
            return f"empty {k}"
        if "\ufffd" in s:
            return f"{k} has U+FFFD (text lost in a decode)"
    return None


def row_filters(row: dict, c: DictConfig) -> tuple[str | None, str | None]:
    """The first per-sample reason to drop a row (before any cross-sample step), and its detail."""
    if bad := unencodable_fields(row):
        return (
            "unencodable_text",
            f"{', '.join(bad)}: lone surrogate, not UTF-8 (written escaped as \\udXXXX)",
        )
    if bad := _bad_text(row):
        return "invalid_text", bad
    f = c.filters
    if f.drop_truncated and row["finish_reason"] == "length":
        return "truncated", "finish_reason=length"
    if (fmt := format_rejection(row))[0]:
        return fmt
    a = c.answer
    ext = extract_answer(row["completion"], list(a.extractors), a.require_think, a.boxed, a.box_prose)
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
