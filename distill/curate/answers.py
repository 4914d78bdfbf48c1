"""Final-answer extraction: the text after `</think>`, by the first configured extractor that finds one.

Kept apart from the verifier because eval extracts the same way and because the extraction rules (which
box, what counts as a broken think block) are where users' recipes differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from distill.engines.chat import THINK_CLOSE, THINK_OPEN


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces balanced), or of `\\boxed 5`."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text)]
    for m in reversed(starts):
        if m.group(1) is None:  # `\boxed 5`: up to the next whitespace or `$`
            tail = re.match(r"[^\s$]+", text[m.end() :])
            if tail:
                return tail.group(0).strip()
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[m.end() : i - 1].strip()
    return None


def answer_is(text: str) -> str | None:
    """`The answer is X.` (the phrasing of most traces without a box)."""
    hits = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*\.?\s*(?:$|\n)", text, flags=re.IGNORECASE)
    return hits[-1].strip() if hits else None


def last_number(text: str) -> str | None:
    hits = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)
    return hits[-1] if hits else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "answer_is": answer_is,
    "last_number": last_number,
}


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    method: str | None  # which extractor found it
    problem: str | None  # a reject reason: bad_think | no_answer
    detail: str | None = None


def think_problem(completion: str) -> str | None:
    """Why a think block is unusable, or None. An absent opening tag is fine (R1-style traces)."""
    n_close = completion.count(THINK_CLOSE)
    if n_close == 0:
        return "think_unclosed" if THINK_OPEN in completion else "think_missing"
    if n_close > 1 or completion.count(THINK_OPEN) > 1:
        return "think_repeated"
    if THINK_OPEN in completion and completion.index(THINK_OPEN) > completion.index(THINK_CLOSE):
        return "think_misordered"
    return None


def extract_answer(
    completion: str, methods: Iterable[str] = ("boxed",), require_think: bool = True
) -> Extraction:
    """The final answer from the text after `</think>`, by the first method in `methods` that finds one."""
    if require_think and (bad := think_problem(completion)):
        return Extraction(None, None, "bad_think", bad)
    response = completion.rsplit(THINK_CLOSE, 1)[-1]
    for name in methods:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown answer extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
        ans = EXTRACTORS[name](response)
        if ans:
            return Extraction(ans, name, None)
    return Extraction(None, None, "no_answer", "no " + "/".join(methods) + " answer after </think>")
