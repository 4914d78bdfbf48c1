"""Text normalisation, problem dedup (exact and MinHash near-duplicates) and per-problem sample selection.

Normalisation keeps math symbols (`4 - 1` and `4 + 1` must stay different problems) and drops case,
prose punctuation and whitespace runs, which is what copies of one problem usually differ by.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict

_TOKEN = re.compile(r"[^\W_]+|[+\-*/=^<>()\[\]{}|%!\\]")


def tokens(text: str) -> list[str]:
    """Lower-cased words, numbers and math symbols; prose punctuation and spacing are dropped."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def text_hash(text: str) -> str:
    return hashlib.sha1(normalize(text).encode()).hexdigest()


def _shingles(toks: list[str], n: int) -> set[str]:
    if len(toks) <= n:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def dedup_problems(
    problems: list[tuple[str, str]],
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 3,
    seed: int = 1,
) -> dict[str, dict]:
    """Duplicate problems -> {"reason", "duplicate_of"}; the first of each group (input order) stays."""
    out: dict[str, dict] = {}
    first: dict[str, str] = {}
    uniq: list[tuple[str, list[str]]] = []
    for pid, text in problems:
        h = text_hash(text) if exact else pid
        if h in first:
            out[pid] = {"reason": "duplicate_problem", "duplicate_of": first[h]}
        else:
            first[h] = pid
            uniq.append((pid, tokens(text)))
    if near and len(uniq) > 1:
        out.update(_near_duplicates(uniq, threshold, num_perm, shingle, seed))
    return out


def _near_duplicates(
    uniq: list[tuple[str, list[str]]], threshold: float, num_perm: int, shingle: int, seed: int
) -> dict[str, dict]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out: dict[str, dict] = {}
    for pid, toks in uniq:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([s.encode() for s in _shingles(toks, shingle)])
        hits = lsh.query(m)
        if hits:
            out[pid] = {"reason": "near_duplicate_problem", "duplicate_of": min(hits)}
        else:
            lsh.insert(pid, m)
    return out


def select_samples(rows: list[dict], k: int | None) -> dict[int, str]:
    """Of one problem's candidate samples, which to drop and why: repeated traces, then all past `k`.

    Distinct traces are preferred: a sample whose normalised completion repeats an earlier one is dropped
    as `duplicate_trace` before any distinct one is dropped as `over_k`. Returns {sample_idx: reason}.
    """
    seen: set[str] = set()
    distinct, dropped = [], {}
    for r in sorted(rows, key=lambda r: r["sample_idx"]):
        h = text_hash(r["completion"])
        if h in seen:
            dropped[r["sample_idx"]] = "duplicate_trace"
        else:
            seen.add(h)
            distinct.append(r)
    if k is not None:
        for r in distinct[k:]:
            dropped[r["sample_idx"]] = "over_k"
    return dropped


def group_by(rows: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out
