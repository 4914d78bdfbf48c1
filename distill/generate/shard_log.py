"""A generate shard's append log and the Parquet shard it becomes, both handled without holding its text.

While a shard generates, finished problems are appended to its JSONL log (`core.io.AppendLog`: it survives
SIGKILL at any byte). Resuming needs only which problems are complete, and finishing needs the rows in
problem order: both come from one scan that keeps each row's problem id, sample index and byte range,
never its text, so memory is a few dozen bytes a sample however long the traces are. The finished
Parquet shard is the dataset; the log is deleted once the shard's manifest is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from distill.core.io import atomic_writer
from distill.core.schemas import SAMPLE, RowError
from distill.core.shards import ShardWriter

Index = dict[tuple[str, int], tuple[int, int]]  # (problem id, sample idx) -> (byte offset, length)


def scan(path: Path) -> tuple[Index, int]:
    """The first row of every (problem, sample) in the log with its byte range; and the rows seen."""
    index: Index = {}
    seen = 0
    if not path.exists():
        return index, 0
    with open(path, "rb") as f:
        offset = 0
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    r = json.loads(line)
                    k = (r["problem_id"], r["sample_idx"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise RowError(f"{path}:{lineno}: not a sample row ({e})") from None
                seen += 1
                index.setdefault(k, (offset, len(line)))
            offset += len(line)
    return index, seen


def complete(index: Index, pids: list[str], n: int) -> set[str]:
    """Problems with all of samples 0..n-1 in the log."""
    return {p for p in pids if all((p, i) in index for i in range(n))}


def _lines(path: Path, ranges: list[tuple[int, int]]) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            yield f.read(length)


def keep_only(path: Path, index: Index, seen: int, done: set[str], n: int) -> None:
    """Rewrites the log with only the complete problems' rows (first copy of each), streamed, atomically."""
    keys = [k for k in index if k[0] in done]
    if len(keys) == seen:
        return
    ranges = sorted(index[k] for k in keys)
    with atomic_writer(path) as out:
        for line in _lines(path, ranges):
            out.write(line if line.endswith(b"\n") else line + b"\n")


def finalize(log: Path, out: Path, pids: list[str], n: int) -> tuple[dict, int] | None:
    """The shard's Parquet file, rows in problem order (first copy of each); None when rows are missing.

    Returns the shard's record and how many duplicated or foreign rows the log held (a crash between a
    chunk's append and its bookkeeping, or a driver from before locks, can leave some)."""
    index, seen = scan(log)
    want = [(p, i) for p in pids for i in range(n)]
    if any(k not in index for k in want):
        return None
    with ShardWriter(out, SAMPLE) as w:
        for line in _lines(log, [index[k] for k in want]):
            w.write([json.loads(line)])
    return w.record, seen - len(want)
