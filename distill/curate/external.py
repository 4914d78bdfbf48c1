"""External trace sets in their own shapes, by config: exploded list columns, dotted paths, from/value
conversations, other think markers, and a `meta` of only the columns named.

Public trace sets disagree on shape: OpenR1-Math-220k holds several generations per problem in a list
column (with per-index columns beside it, e.g. `correctness_math_verify`); OpenThoughts writes ShareGPT
`conversations` with `from`/`value` and `<|begin_of_thought|>` markers; AM-DeepSeek-R1-Distilled keeps its
reference answer at `messages[0].info.reference_answer`. Each raw row is turned here into flat rows whose
keys are the configured column names (dotted paths included), so `inputs.map_row` maps them like any
other file. `conf/input/` holds a preset per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.core.schemas import RowError
from distill.engines.formats import THINK_CLOSE, THINK_OPEN


@dataclass
class RoleMap:
    role_key: str = "role"  # the key of a message's speaker (OpenThoughts: `from`)
    content_key: str = "content"  # the key of its text (OpenThoughts: `value`)
    names: dict[str, str] = field(
        default_factory=dict
    )  # speaker -> user|assistant|system, e.g. gpt: assistant


@dataclass
class ExternalConfig:
    explode: list[str] = field(default_factory=list)  # list columns: one sample per index, all zipped
    roles: RoleMap = field(default_factory=RoleMap)
    think_open: str = THINK_OPEN  # the file's reasoning markers, rewritten to <think> </think>
    think_close: str = THINK_CLOSE
    strip: list[str] = field(default_factory=list)  # markers removed from completions, e.g. <answer>
    meta_columns: list[str] = field(default_factory=list)  # kept in `meta` under their last path part


_MISSING = object()


def get_path(raw: dict, path: str) -> Any:
    """`a.b.0.c`: dict keys and list indices; a key that itself holds dots is taken whole first."""
    if path in raw:
        return raw[path]
    cur: Any = raw
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _explode(raw: dict, cols: list[str], where: str) -> list[tuple[dict, str]]:
    if not cols:
        return [(raw, where)]
    lists = {}
    for c in cols:
        v = get_path(raw, c)
        if not isinstance(v, list):
            got = "missing" if v is _MISSING else type(v).__name__
            raise RowError(f"{where}: column '{c}' (stage.external.explode) must be a list, got {got}")
        lists[c] = v
    lengths = {c: len(v) for c, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise RowError(f"{where}: exploded columns differ in length: {lengths}")
    n = next(iter(lengths.values()))
    return [({**raw, **{c: v[i] for c, v in lists.items()}}, f"{where} [{i}]") for i in range(n)]


def _text(s: Any, ext: ExternalConfig) -> Any:
    if not isinstance(s, str):
        return s
    if ext.think_open != THINK_OPEN:
        s = s.replace(ext.think_open, THINK_OPEN)
    if ext.think_close != THINK_CLOSE:
        s = s.replace(ext.think_close, THINK_CLOSE)
    for m in ext.strip:
        s = s.replace(m, "")
    if THINK_CLOSE in s:  # markers stripped leave blank lines: keep the student format's spacing
        head, _, tail = s.partition(THINK_CLOSE)
        s = f"{head.rstrip()}\n{THINK_CLOSE}\n\n{tail.strip()}"
        s = s.replace(f"{THINK_OPEN}\n\n", f"{THINK_OPEN}\n", 1) if s.startswith(THINK_OPEN) else s
    return s


def _messages(msgs: Any, ext: ExternalConfig, where: str) -> Any:
    if not isinstance(msgs, list):
        return msgs
    r = ext.roles
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or r.role_key not in m or r.content_key not in m:
            raise RowError(
                f"{where}: message {j} lacks '{r.role_key}'/'{r.content_key}' (stage.external.roles)"
            )
        role = r.names.get(m[r.role_key], m[r.role_key])
        msg = {"role": role, "content": m[r.content_key]}
        if role == "assistant":
            msg["content"] = _text(msg["content"], ext)
            if m.get("reasoning_content"):
                msg["reasoning_content"] = m["reasoning_content"]
        out.append(msg)
    return out


def flatten(raw: dict, columns: dict, ext: ExternalConfig, where: str) -> list[tuple[dict, str, dict]]:
    """(flat row keyed by the configured column names, where, meta) per sample of one raw row."""
    out = []
    for row, w in _explode(raw, list(ext.explode), where):
        flat = {}
        for fld, col in columns.items():
            v = get_path(row, col)
            if v is _MISSING:
                continue  # map_row names a missing required column
            if fld == "messages":
                v = _messages(v, ext, w)
            elif fld == "completion":
                v = _text(v, ext)
            flat[col] = v
        meta = {}
        for col in ext.meta_columns:
            v = get_path(row, col)
            meta[col.rsplit(".", 1)[-1]] = None if v is _MISSING else v
        out.append((flat, w, meta))
    return out
