"""Row I/O: JSONL and Parquet, schema-checked, atomic writes, and a crash-safe append log.

Every whole-file write goes to a temp file in the same directory and is renamed over the target, so a
killed stage leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.core.schemas import RowError, Schema


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def _dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def read_rows(path: str | Path, schema: Schema | None = None) -> Iterator[dict]:
    """Yields rows from a .jsonl or .parquet file, each checked against `schema` (file:line in errors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield schema.check(row, f"{path}:row {i}") if schema else row
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RowError(
                    f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})"
                ) from None
            yield schema.check(row, f"{path}:{lineno}") if schema else row


def write_rows(path: str | Path, rows: Iterable[dict], schema: Schema | None = None) -> int:
    """Writes all rows atomically; returns the row count. Rows are checked before anything is replaced."""
    path = Path(path)
    rows = [schema.check(r, f"{path} (writing row {i})") if schema else r for i, r in enumerate(rows, 1)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    else:
        atomic_write_text(path, "".join(_dumps(r) + "\n" for r in rows))
    return len(rows)


class AppendLog:
    """A JSONL file that grows in flushed, fsynced chunks and survives SIGKILL at any byte.

    On open, a torn last line (no trailing newline) is cut off; everything before it is a complete row.
    """

    def __init__(self, path: str | Path, schema: Schema | None = None):
        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped_bytes = self._drop_torn_tail()

    def _drop_torn_tail(self) -> int:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return 0
            f.seek(0)  # only after a crash: reading the whole file once is fine
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return len(data) - keep

    def rows(self) -> list[dict]:
        return list(read_rows(self.path, self.schema)) if self.path.exists() else []

    def rewrite(self, rows: list[dict]) -> None:
        write_rows(self.path, rows, self.schema)

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        checked = [self.schema.check(r, f"{self.path} (appending)") if self.schema else r for r in rows]
        data = "".join(_dumps(r) + "\n" for r in checked).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
