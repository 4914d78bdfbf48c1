"""Curate's input: this run's generate samples, or an external trace file mapped onto the sample schema.

Users bring trace datasets in many shapes: generate-schema rows, chat `messages`, or `problem/solution/
answer` columns. `columns` maps sample fields to the file's columns; what a file lacks gets a documented
default (token counts: whitespace words), and every row is then checked as a sample, so a missing field
fails with file, line and field.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from distill.core.io import check_file, read_rows
from distill.core.manifest import MANIFEST, Manifest, checked_output, file_input, upstream
from distill.core.paths import Paths
from distill.core.schemas import SAMPLE, RowError
from distill.core.shards import dataset_files, read_any, read_shard
from distill.curate.external import ExternalConfig, flatten
from distill.engines.chat import DEFAULT_PROMPT, join_reasoning, split_completion


def _last(messages: list, role: str, where: str) -> dict:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == role:
            return m
    raise RowError(f"{where}: 'messages' has no {role} message")


def _col(raw: dict, columns: dict, field: str, where: str, required: bool = True):
    col = columns.get(field)
    if col is None:
        return None
    if col not in raw:
        if required:
            raise RowError(f"{where}: missing column '{col}' (mapped to sample field '{field}')")
        return None
    return raw[col]


def map_row(raw: dict, columns: dict, where: str, prompt_template: str = DEFAULT_PROMPT) -> dict:
    """One external row as a sample row (not yet numbered: `sample_idx` is set by `number_samples`)."""
    row: dict = {}
    if "messages" in columns:
        msgs = _col(raw, columns, "messages", where)
        if not isinstance(msgs, list):
            raise RowError(f"{where}: column '{columns['messages']}' must be a list of messages")
        user, asst = _last(msgs, "user", where), _last(msgs, "assistant", where)
        row["prompt"] = user.get("content")
        row["completion"] = (
            join_reasoning(asst["reasoning_content"], asst.get("content"))
            if asst.get("reasoning_content")
            else asst.get("content")
        )
    for field in SAMPLE.fields:
        if field in columns and field != "messages":
            row[field] = _col(raw, columns, field, where)
    if row.get("problem") is None and isinstance(row.get("prompt"), str):
        row["problem"] = row["prompt"]
    if not isinstance(row.get("problem"), str):
        raise RowError(f"{where}: no problem text (map 'problem', 'prompt' or 'messages' in stage.columns)")
    for field in ("answer", "problem_id"):
        v = row.get(field)
        if field in row and (isinstance(v, (list, dict, bool)) or (v is None and field == "problem_id")):
            raise RowError(
                f"{where}: column '{columns[field]}' (mapped to '{field}') must be a string or number, got "
                f"{'null' if v is None else type(v).__name__}"
            )
    if row.get("answer") is not None and not isinstance(row["answer"], str):
        row["answer"] = str(row["answer"])
    row.setdefault("answer", None)
    if "problem_id" not in row:  # only then: a lone surrogate in the text is curate's to reject, not a crash
        row["problem_id"] = hashlib.sha1(row["problem"].encode("utf-8", "surrogatepass")).hexdigest()[:16]
    row["problem_id"] = str(row["problem_id"])
    if row.get("prompt") is None:
        row["prompt"] = prompt_template.format(problem=row["problem"])
    comp = row.get("completion")
    if isinstance(comp, str):
        if "reasoning" not in row or "response" not in row:
            row["reasoning"], row["response"] = split_completion(comp)
        row.setdefault("completion_tokens", len(comp.split()))
    row.setdefault("prompt_tokens", len(str(row["prompt"]).split()))
    row.setdefault("finish_reason", "stop")
    row.setdefault("teacher", "external")
    row.setdefault("sampling", {})
    row.setdefault("meta", {k: v for k, v in raw.items() if k not in set(columns.values())})
    return row


def read_external(
    path: Path, columns: dict, prompt_template: str = DEFAULT_PROMPT, ext: ExternalConfig | None = None
) -> list[dict]:
    """Every row of an external file as a sample (tests and small files; the stage streams `iter_rows`)."""
    return [r for r, _ in iter_external(path, columns, prompt_template, ext)]


def iter_external(
    path: Path, columns: dict, prompt_template: str = DEFAULT_PROMPT, ext: ExternalConfig | None = None
) -> Iterator[tuple[dict, str]]:
    """External rows mapped onto the sample schema, streamed, with where each came from. `sample_idx` is
    0.. within each problem in file order where the file has none (a counter per problem, no rows kept)."""
    if not columns:
        for i, r in enumerate(read_any(path, SAMPLE), start=1):
            yield r, _where(path, i)
        return
    ext = ext or ExternalConfig()
    counter: dict[str, int] = defaultdict(int)
    for i, raw in enumerate(read_any(path), start=1):
        for flat, w, meta in flatten(raw, columns, ext, _where(path, i)):  # distill.curate.external
            row = map_row(flat, columns, w, prompt_template)
            if "meta" not in columns:
                row["meta"] = meta
            pid = row["problem_id"]
            if row.get("sample_idx") is None:
                row["sample_idx"] = counter[pid]
            counter[pid] = max(counter[pid], row["sample_idx"] + 1)
            yield SAMPLE.check(row, w), w


def _where(path: Path, i: int) -> str:
    return f"{path}:{i}" if path.suffix != ".parquet" else f"{path}:row {i}"


def input_record(input_path: str | None, paths: Paths) -> dict:
    """What curate reads, keyed: an external file by content hash, generate's output by its manifest key."""
    if input_path:
        path = paths.resolve(input_path)
        if not path.exists():
            raise FileNotFoundError(f"stage.input={input_path}: no such file ({path})")
        if path.is_dir():
            return _stage_dir_input(input_path, path)
        check_file(path, "a trace file (.jsonl or .parquet)")
        return file_input("samples", path)
    if not (paths.stage_dir("generate") / MANIFEST).exists():
        raise FileNotFoundError(
            f"curate needs this run's generate output ({paths.stage_dir('generate') / MANIFEST} is missing): "
            "run stage=generate first, or give an external trace file with stage.input=PATH"
        )
    m = upstream(paths, "generate", "curate")
    return checked_output(m, "samples", "curate")


def _stage_dir_input(input_path: str, path: Path) -> dict:
    """Another run's finished generate stage (its shards, checked against its manifest): how ablations
    and re-curations reuse one expensive sample set without copying it."""
    mf = path / MANIFEST
    if not mf.exists():
        raise FileNotFoundError(
            f"stage.input={input_path}: {path} is a directory without {MANIFEST}; give a trace file "
            "(.jsonl or .parquet) or a finished generate stage directory (runs/<name>/generate)"
        )
    m = Manifest.read(mf)
    if m.stage != "generate" or "samples" not in m.outputs:
        raise ValueError(f"stage.input={input_path}: {mf} is a {m.stage!r} manifest, not generate's samples")
    return checked_output(m, "samples", "curate")


class Units:
    """Curate's input as units of work: one per generate shard (or the one external file). Every sample
    of a problem is in one unit, so units are curated independently (in order, by local workers or by
    Slurm array tasks) and their outputs concatenated."""

    def __init__(
        self, record: dict, external: bool, columns: dict, prompt_template: str, ext: ExternalConfig
    ):
        self.record, self.external = record, external
        self.columns, self.template, self.ext = columns, prompt_template, ext
        self.files = dataset_files(record)

    def __len__(self) -> int:
        return len(self.files)

    def rows(self, unit: int) -> Iterator[tuple[dict, str]]:
        path = self.files[unit]
        if self.external:
            yield from iter_external(path, self.columns, self.template, self.ext)
        elif path.suffix == ".parquet":
            for i, r in enumerate(read_shard(path), start=1):
                yield SAMPLE.check(r, f"{path}:row {i}"), f"{path}:row {i}"
        else:
            for i, r in enumerate(read_rows(path, SAMPLE), start=1):
                yield r, f"{path}:{i}"

    def problems(self, unit: int) -> Iterator[tuple[str, str]]:
        """(problem id, text) of each sample, in order; only those two columns are read from a shard."""
        path = self.files[unit]
        if not self.external and path.suffix == ".parquet":
            yield from ((r["problem_id"], r["problem"]) for r in read_shard(path, ["problem_id", "problem"]))
        else:
            yield from ((r["problem_id"], r["problem"]) for r, _ in self.rows(unit))

    def groups(self, unit: int, contiguous: bool) -> Iterator[list[tuple[dict, str]]]:
        """The unit's samples, one list per problem. A file whose problems are not contiguous (checked by
        the problem pass) is grouped in memory: sort such a file by problem to stream it."""
        rows = self.rows(unit) if contiguous else iter(_grouped_in_memory(self.rows(unit)))
        cur: list[tuple[dict, str]] = []
        seen: dict[int, str] = {}
        for row, where in rows:
            if cur and row["problem_id"] != cur[0][0]["problem_id"]:
                yield cur
                cur, seen = [], {}
            if (i := row["sample_idx"]) in seen:
                raise RowError(
                    f"{where}: repeats problem_id={row['problem_id']!r} sample_idx={i} (first: {seen[i]})"
                )
            seen[i] = where
            cur.append((row, where))
        if cur:
            yield cur


def _grouped_in_memory(rows: Iterator[tuple[dict, str]]) -> list[tuple[dict, str]]:
    by: dict[str, list] = defaultdict(list)
    for row, where in rows:
        by[row["problem_id"]].append((row, where))
    return [x for g in by.values() for x in g]
