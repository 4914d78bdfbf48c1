"""Problems from a local jsonl/parquet file or a Hugging Face dataset, mapped onto the problem schema.

Column names are configurable because every public math set spells them differently (`problem`,
`question`, `Problem`; `answer`, `solution`, `expected_answer`); every other column is carried in `meta`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from distill.core.config import ProblemSource
from distill.core.io import check_file, read_rows, sha256_file
from distill.core.paths import Paths
from distill.core.schemas import PROBLEM, RowError


def _to_problem(raw: dict, src: ProblemSource, where: str) -> dict:
    for role, col in (("problem", src.problem_col), ("id", src.id_col), ("answer", src.answer_col)):
        if col is not None and col not in raw:
            raise RowError(f"{where}: missing column '{col}' (configured as the {role} column)")
    text = raw[src.problem_col]
    if not isinstance(text, str) or not text.strip():
        raise RowError(f"{where}: column '{src.problem_col}' must be a non-empty string")
    if src.id_col and not _scalar(raw[src.id_col]):
        raise RowError(
            f"{where}: column '{src.id_col}' (the id column) must be a string or number, got "
            f"{_kind(raw[src.id_col])}; give every problem an id, or set the source's id_col: null to hash the text"
        )
    pid = str(raw[src.id_col]) if src.id_col else hashlib.sha1(text.encode()).hexdigest()[:16]
    answer = raw[src.answer_col] if src.answer_col else None
    if answer is not None and not _scalar(answer):
        raise RowError(
            f"{where}: column '{src.answer_col}' (the answer column) must be a string or number, got "
            f'{_kind(answer)}; write one final answer per problem (e.g. "(1, 2)" as a string)'
        )
    used = {src.problem_col, src.id_col, src.answer_col}
    meta = {k: v for k, v in raw.items() if k not in used}
    row = {
        "problem_id": pid,
        "problem": text,
        "answer": None if answer is None else str(answer),
        "meta": meta,
    }
    return PROBLEM.check(row, where)


def _scalar(v: object) -> bool:
    """An id or an answer: a string or a number; a list/dict would be stringified into a wrong reference."""
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _kind(v: object) -> str:
    return "null" if v is None else type(v).__name__


def _raw_rows(src: ProblemSource, paths: Paths) -> Iterable[tuple[str, dict]]:
    if src.path:
        path = paths.resolve(src.path)
        for i, raw in enumerate(read_rows(path), start=1):
            yield (f"{path}:{i}" if path.suffix != ".parquet" else f"{path}:row {i}"), raw
        return
    import datasets

    ds = datasets.load_dataset(src.dataset, src.dataset_config, split=src.split, revision=src.revision)
    for i, raw in enumerate(ds):
        yield f"{src.dataset}[{src.split}] row {i}", dict(raw)


def load_problems(src: ProblemSource, paths: Paths) -> list[dict]:
    """All problems of a source, in source order, ids unique (a duplicate id is an error, not a merge)."""
    if bool(src.path) == bool(src.dataset):
        raise ValueError("a problem source needs exactly one of `path` or `dataset`")
    out, seen = [], {}
    for where, raw in _raw_rows(src, paths):
        row = _to_problem(raw, src, where)
        if row["problem_id"] in seen:
            raise RowError(
                f"{where}: duplicate problem id '{row['problem_id']}' (first at {seen[row['problem_id']]})"
            )
        seen[row["problem_id"]] = where
        out.append(row)
        if src.limit is not None and len(out) >= src.limit:
            break
    if not out:
        what = paths.resolve(src.path) if src.path else f"{src.dataset}[{src.split}]"
        raise RowError(
            f"{what}: no problems (the source is empty); point the data source at a file with rows"
        )
    return out


def source_fingerprint(src: ProblemSource, paths: Paths) -> dict:
    """An input record for the manifest: a file's sha256, or a dataset's name/split/revision."""
    if src.path:
        path = paths.resolve(src.path)
        check_file(path)
        digest = sha256_file(path)
        return {"name": "problems", "path": str(path), "sha256": digest, "key": digest[:16]}
    ident = f"{src.dataset}|{src.dataset_config}|{src.split}|{src.revision}"
    return {
        "name": "problems",
        "path": ident,
        "sha256": None,
        "key": hashlib.sha256(ident.encode()).hexdigest()[:16],
    }


def shard_of(rows: list[dict], shard: int, num_shards: int) -> list[dict]:
    """Round-robin by position: deterministic, balanced, and independent of problem ids."""
    if not 0 <= shard < num_shards:
        raise ValueError(
            f"stage.shard={shard} is outside 0..{num_shards - 1} (stage.num_shards={num_shards})"
        )
    return rows[shard::num_shards]


def data_source(cfg: Any, name: str, what: str) -> Any:
    """`cfg.data[name]`, or an error that names the config key that asked for it and the valid names."""
    if name not in cfg.data:
        raise KeyError(f"{what}: {name!r} is not a key of `data` (have: {', '.join(cfg.data)})")
    return cfg.data[name]
