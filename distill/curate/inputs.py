"""Curate's input: this run's generate samples, or an external trace file mapped onto the sample schema.

Users bring trace datasets in many shapes: generate-schema rows, chat `messages`, or `problem/solution/
answer` columns. `columns` maps sample fields to the file's columns; what a file lacks gets a documented
default (token counts: whitespace words), and every row is then checked as a sample, so a missing field
fails with file, line and field.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from distill.core.io import check_file, read_rows
from distill.core.manifest import MANIFEST, checked_output, file_input, upstream
from distill.core.paths import Paths
from distill.core.schemas import SAMPLE, RowError
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


def number_samples(rows: list[dict]) -> None:
    """`sample_idx` 0.. within each problem, in file order, where the file has none."""
    counter: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.get("sample_idx") is None:
            r["sample_idx"] = counter[r["problem_id"]]
        counter[r["problem_id"]] = max(counter[r["problem_id"]], r["sample_idx"] + 1)


def read_external(
    path: Path, columns: dict, prompt_template: str = DEFAULT_PROMPT, ext: ExternalConfig | None = None
) -> list[dict]:
    if not columns:
        return list(read_rows(path, SAMPLE))
    ext = ext or ExternalConfig()
    rows, wheres = [], []
    for i, raw in enumerate(read_rows(path), start=1):
        where = f"{path}:{i}" if path.suffix != ".parquet" else f"{path}:row {i}"
        for flat, w, meta in flatten(raw, columns, ext, where):  # distill.curate.external
            row = map_row(flat, columns, w, prompt_template)
            if "meta" not in columns:
                row["meta"] = meta
            rows.append(row)
            wheres.append(w)
    number_samples(rows)
    return [SAMPLE.check(r, w) for r, w in zip(rows, wheres, strict=True)]


def input_record(input_path: str | None, paths: Paths) -> dict:
    """What curate reads, keyed: an external file by content hash, generate's output by its manifest key."""
    if input_path:
        path = paths.resolve(input_path)
        if not path.exists():
            raise FileNotFoundError(f"stage.input={input_path}: no such file ({path})")
        check_file(path, "a trace file (.jsonl or .parquet)")
        return file_input("samples", path)
    if not (paths.stage_dir("generate") / MANIFEST).exists():
        raise FileNotFoundError(
            f"curate needs this run's generate output ({paths.stage_dir('generate') / MANIFEST} is missing): "
            "run stage=generate first, or give an external trace file with stage.input=PATH"
        )
    m = upstream(paths, "generate", "curate")
    return checked_output(m, "samples", "curate")


def load_samples(
    record: dict, external: bool, columns: dict, prompt_template: str, ext: ExternalConfig | None = None
) -> list[dict]:
    path = Path(record["path"])
    rows = read_external(path, columns, prompt_template, ext) if external else list(read_rows(path, SAMPLE))
    seen: dict[tuple[str, int], int] = {}
    for i, r in enumerate(rows, start=1):
        k = (r["problem_id"], r["sample_idx"])
        if k in seen:
            raise RowError(
                f"{path}: row {i} repeats problem_id={k[0]!r} sample_idx={k[1]} (first: row {seen[k]})"
            )
        seen[k] = i
    return rows
