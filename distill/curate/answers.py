"""Final-answer extraction: the text after `</think>`, by the first configured extractor that finds one.

Kept apart from the verifier because eval extracts the same way and because the extraction rules (which
box, what counts as a broken think block) are where users' recipes differ. Two box rules are choices:

- `boxed`: `joined` (default) reads a run of boxes separated only by `,` `;` `and` `or` (e.g.
  `\\boxed{3} and \\boxed{5}`) as one answer `3, 5`, as math-verify does: a two-part answer verifies, and a
  hedge (`\\boxed{3} or \\boxed{5}`) is a set that matches no single reference. `last` takes the last box
  only (a hedge then passes when its last option is right). Boxes with words between them (`\\boxed{1}
  then \\boxed{2}`) are a correction in both rules: the last one counts.
- `box_prose`: `find` (default) hands the box's content to math-verify as inline math, whose answer-finding
  rules then apply inside it (`\\boxed{The answer is 5}` -> 5). `whole` is math-verify's reading of a box
  in free text: a box that holds words is one expression, so a sentence in a box is not an answer (the
  extracted answer is then `\\boxed{...}`, which math-verify parses whole).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from distill.engines.chat import THINK_CLOSE, THINK_OPEN

_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces balanced), or of `\\boxed 5`."""
    starts = [m for m in _BOX.finditer(text)]
    for m in reversed(starts):
        if m.group(1) is None:  # `\boxed 5`: up to the next whitespace or `$`
            tail = re.match(r"[^\s$]+", text[m.end() :])
            if tail:
                return tail.group(0).strip()
            continue
        if (end := _close(text, m.end())) is not None:
            return text[m.end() : end - 1].strip()
    return None


def _close(text: str, i: int) -> int | None:
    """Index just past the brace that closes the one opened before `i`, or None."""
    depth = 1
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return i if depth == 0 else None


def boxes(text: str) -> list[tuple[int, int, str]]:
    """Every top-level box in order, as (start, end, content); nested boxes belong to their outer box."""
    out, pos = [], 0
    while m := _BOX.search(text, pos):
        if m.group(1) is None:
            tail = re.match(r"[^\s$]+", text[m.end() :])
            if not tail:
                pos = m.end()
                continue
            end, content = m.end() + tail.end(), tail.group(0)
        elif (end := _close(text, m.end())) is None:
            break
        else:
            content = text[m.end() : end - 1]
        out.append((m.start(), end, content.strip()))
        pos = end
    return out


# What may stand between two boxes of one multi-part answer: punctuation, math delimiters, spacing, and/or.
_SEPARATOR = re.compile(
    r"(?:\s|[$,;]|\\[()\[\]]|\\(?:q?quad|,|;|!)|\b(?:and|or)\b|\\text\{\s*(?:and|or|,)?\s*\})*", re.IGNORECASE
)


def joined_boxed(text: str) -> str | None:
    """The last run of boxes joined only by separators, as one answer `a, b` (repeats dropped)."""
    found = boxes(text)
    if len(found) < 2:
        return last_boxed(text)
    run = [found[-1]]
    for prev in reversed(found[:-1]):
        if not _SEPARATOR.fullmatch(text[prev[1] : run[0][0]]):
            break
        run.insert(0, prev)
    if len(run) == 1:
        return last_boxed(text)
    parts: list[str] = []
    for _, _, c in run:
        if c and (not parts or parts[-1] != c):
            parts.append(c)
    return ", ".join(parts) or None


_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")


def has_prose(answer: str) -> bool:
    """Words in an answer, outside LaTeX command names (`\\text{ apples}` has one, `\\sqrt{2}` none)."""
    return bool(_WORD.search(_COMMAND.sub(" ", answer)))


def answer_is(text: str) -> str | None:
    """`The answer is X.` (the phrasing of most traces without a box)."""
    hits = re.findall(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*\.?\s*(?:$|\n)", text, flags=re.IGNORECASE)
    return hits[-1].strip() if hits else None


def last_number(text: str) -> str | None:
    hits = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)
    return hits[-1] if hits else None


BOXED = {"last": last_boxed, "joined": joined_boxed}
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,  # `extract_answer` reads boxes by its `boxed` rule
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
    completion: str,
    methods: Iterable[str] = ("boxed",),
    require_think: bool = True,
    boxed: str = "joined",
    box_prose: str = "find",
) -> Extraction:
    """The final answer from the text after `</think>`, by the first method in `methods` that finds one.

    `boxed` (joined|last) and `box_prose` (find|whole) are the box rules in this module's docstring.
    """
    if boxed not in BOXED:
        raise ValueError(f"unknown boxed rule {boxed!r}; valid: {', '.join(BOXED)}")
    if box_prose not in ("find", "whole"):
        raise ValueError(f"unknown box_prose rule {box_prose!r}; valid: find, whole")
    if require_think and (bad := think_problem(completion)):
        return Extraction(None, None, "bad_think", bad)
    response = completion.rsplit(THINK_CLOSE, 1)[-1]
    for name in methods:
        if name not in EXTRACTORS:
            raise ValueError(f"unknown answer extractor {name!r}; valid: {', '.join(EXTRACTORS)}")
        ans = BOXED[boxed](response) if name == "boxed" else EXTRACTORS[name](response)
        if ans:
            if name == "boxed" and box_prose == "whole" and has_prose(ans):
                ans = f"\\boxed{{{ans}}}"
            return Extraction(ans, name, None)
    return Extraction(None, None, "no_answer", "no " + "/".join(methods) + " answer after </think>")
