"""Sharded Parquet datasets: how samples, curated pairs and eval samples are stored between stages.

A dataset is a directory of Parquet shard files (zstd), each written row group by row group to a temp
file and renamed into place, so a writer's memory is one row group and a killed write leaves no half
shard. A stage's manifest lists the shards in order with their rows and sha256 (`dataset_record`);
readers iterate them one row group at a time, so no stage holds a whole dataset.

Columns follow the row schema (`core.schemas`): typed columns for its scalar fields, chat `messages` as
a list of {role, content} structs (what `datasets` and TRL read natively), dict fields and any field
beyond the schema as JSON text. A sample's text is stored once: `reasoning` and `response` are slices
of `completion` (stored as offsets) whenever they are, which they are for every sample generate writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.core.io import _temp_for, check_file, plain_mode, read_rows, sha256_file
from distill.core.schemas import SCHEMAS, RowError, Schema

ROW_GROUP_ROWS = 64  # ~1 MB of reasoning traces: a reader's memory per open shard
DERIVED = ("reasoning", "response")  # slices of `completion` where they are one
EXTRAS, SPANS = "_extras", "_spans"
FORMAT = "parquet-shards"


def _arrow_type(name: str, types: tuple[type, ...]) -> Any:
    import pyarrow as pa

    if name == "messages":
        return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    kinds = set(types) - {type(None)}
    if kinds <= {str}:
        return pa.string()
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return None  # dicts, lists, mixed: JSON text


def arrow_schema(schema: Schema) -> tuple[Any, set[str]]:
    """The Parquet schema of `schema`'s rows, and the fields stored as JSON text."""
    import pyarrow as pa

    cols, as_json = [], set()
    for name, spec in schema.fields.items():
        t = _arrow_type(name, spec.types)
        if t is None:
            as_json.add(name)
            t = pa.string()
        cols.append(pa.field(name, t))
    cols += [pa.field(SPANS, pa.string()), pa.field(EXTRAS, pa.string())]
    meta = {"distill.schema": schema.name, "distill.json": json.dumps(sorted(as_json))}
    return pa.schema(cols, metadata=meta), as_json


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def encode(row: dict, schema: Schema, as_json: set[str]) -> dict:
    """One row as its Parquet columns: text stored once, dicts and extra fields as JSON."""
    out = {k: (_dumps(row[k]) if k in as_json else row[k]) for k in schema.fields if k in row}
    spans, comp = {}, row.get("completion")
    for k in DERIVED:
        v = row.get(k)
        if isinstance(v, str) and v and isinstance(comp, str) and (i := comp.find(v)) >= 0:
            spans[k], out[k] = [i, i + len(v)], None
    out[SPANS] = _dumps(spans) if spans else None
    extras = {k: v for k, v in row.items() if k not in schema.fields}
    out[EXTRAS] = _dumps(extras) if extras else None
    return out


def decode(col: dict, as_json: set[str]) -> dict:
    spans, extras = col.pop(SPANS, None), col.pop(EXTRAS, None)
    for k in as_json:
        if col.get(k) is not None:
            col[k] = json.loads(col[k])
    if spans:
        comp = col.get("completion") or ""
        for k, (a, b) in json.loads(spans).items():
            col[k] = comp[a:b]
    if extras:
        col.update(json.loads(extras))
    return col


class ShardWriter:
    """Writes one shard file row group by row group; the file appears, complete, only on `close()`."""

    def __init__(self, path: str | Path, schema: Schema, row_group_rows: int = ROW_GROUP_ROWS):
        import pyarrow.parquet as pq

        self.path, self.schema, self.group = Path(path), schema, row_group_rows
        self.arrow, self.as_json = arrow_schema(schema)
        fd, self.tmp = _temp_for(self.path)
        os.fchmod(fd, plain_mode(self.path))
        os.close(fd)
        self.writer = pq.ParquetWriter(self.tmp, self.arrow, compression="zstd")
        self.buf: list[dict] = []
        self.rows = 0

    def write(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.schema.check(r, f"{self.path} (writing row {self.rows + len(self.buf) + 1})")
            self.buf.append(encode(r, self.schema, self.as_json))
            if len(self.buf) >= self.group:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.buf:
            self.writer.write_table(pa.Table.from_pylist(self.buf, schema=self.arrow))
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> dict:
        """Renames the finished shard into place; its record for the manifest (name, rows, sha256)."""
        self._flush()
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return {"file": self.path.name, "rows": self.rows, "sha256": sha256_file(self.path)}

    def abort(self) -> None:
        self.writer.close()
        Path(self.tmp).unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.record = self.close()
        else:
            self.abort()


def write_shard(path: str | Path, rows: Iterable[dict], schema: Schema) -> dict:
    with ShardWriter(path, schema) as w:
        w.write(rows)
    return w.record


def read_shard(path: str | Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of one shard, a row group at a time; `columns` reads only those (a sample's `reasoning` and
    `response` need `completion`, which is then read too)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    meta = f.schema_arrow.metadata or {}
    if b"distill.schema" not in meta:  # a Parquet file someone else wrote: its own columns, as they are
        yield from (
            r for b in f.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns) for r in b.to_pylist()
        )
        return
    as_json = set(json.loads(meta[b"distill.json"]))
    names = set(f.schema_arrow.names)
    cols = None
    if columns is not None:
        want = set(columns) | ({"completion", SPANS} if set(columns) & set(DERIVED) else set())
        cols = [c for c in f.schema_arrow.names if c in want or (c == EXTRAS and not want <= names)]
    for i in range(f.num_row_groups):
        for r in f.read_row_group(i, columns=cols).to_pylist():
            row = decode(r, as_json)
            yield {k: row.get(k) for k in columns} if columns is not None else row


def dataset_record(directory: str | Path, shards: list[dict]) -> dict:
    """A manifest output for a sharded dataset: shards in reading order, each with rows and sha256."""
    return {
        "path": str(directory),
        "format": FORMAT,
        "rows": sum(s["rows"] for s in shards),
        "shards": [{"file": s["file"], "rows": s["rows"]} for s in shards],
        "sha256": {s["file"]: s["sha256"] for s in shards},
    }


def dataset_files(rec: dict) -> list[Path]:
    """The files of an output record: a sharded dataset's shards in order, or the one file."""
    if rec.get("format") == FORMAT:
        return [Path(rec["path"]) / s["file"] for s in rec["shards"]]
    return [Path(rec["path"])]


def iter_dataset(rec: dict, schema: Schema | None = None, columns: list[str] | None = None) -> Iterator[dict]:
    """Every row of an output record (sharded Parquet, or one .jsonl/.parquet file), in order, streamed."""
    for path in dataset_files(rec):
        where = 0
        rows = read_shard(path, columns) if path.suffix == ".parquet" else read_rows(path)
        for row in rows:
            where += 1
            if schema is not None and columns is None:
                schema.check(row, f"{path}:row {where}")
            yield row


def read_any(path: str | Path, schema: Schema | None = None) -> Iterator[dict]:
    """Rows of a .jsonl or .parquet file, a distill shard decoded (its dicts and text slices restored)."""
    path = Path(path)
    if path.suffix != ".parquet":
        yield from read_rows(path, schema)
        return
    check_file(path)
    for i, row in enumerate(read_shard(path), start=1):
        yield schema.check(row, f"{path}:row {i}") if schema else row


def iter_problem_order(rec: dict, columns: list[str] | None = None) -> Iterator[dict]:
    """A round-robin sharded dataset (generate's: problem i is in shard i % num_shards) in the problems'
    own order, one open row group per shard; any other record as `iter_dataset` reads it."""
    files = dataset_files(rec)
    if rec.get("problem_order") != "round_robin" or len(files) < 2:
        yield from iter_dataset(rec, columns=columns)
        return
    groups = [_by_problem(read_shard(f, columns)) for f in files]
    while groups:
        alive = []
        for g in groups:
            if (rows := next(g, None)) is not None:
                yield from rows
                alive.append(g)
        groups = alive


def _by_problem(rows: Iterator[dict]) -> Iterator[list[dict]]:
    cur: list[dict] = []
    for r in rows:
        if cur and r["problem_id"] != cur[0]["problem_id"]:
            yield cur
            cur = []
        cur.append(r)
    if cur:
        yield cur


def schema_of(path: str | Path) -> Schema | None:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).schema_arrow.metadata or {}
    name = meta.get(b"distill.schema")
    return SCHEMAS.get(name.decode()) if name else None


def check_rows(rec: dict, where: str) -> None:
    """Row counts of a sharded dataset against its record (sha256 is checked by `output_mismatches`)."""
    import pyarrow.parquet as pq

    for s in rec.get("shards", []):
        have = pq.ParquetFile(Path(rec["path"]) / s["file"]).metadata.num_rows
        if have != s["rows"]:
            raise RowError(f"{where}: {s['file']} holds {have} rows, its manifest says {s['rows']}")
