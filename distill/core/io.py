"""Row I/O: JSONL and Parquet, schema-checked, atomic writes, and a crash-safe append log.

Every whole-file write goes to a temp file in the same directory and is renamed over the target, so a
killed stage leaves either the old file or the new one, never half of one. A temp file a SIGKILL left
behind (`.<name>.<random>.tmp`) is swept by the next run of the stage (`sweep_temp_files`, called under
the stage's run lock, so a live writer's temp file is never taken). The renamed file gets the mode a
plain `open(path, "w")` would have given it (the umask's, or the replaced file's), not mkstemp's 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from distill.core.schemas import RowError, Schema


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_mode(path: Path, mode: int | None = None) -> int:
    """The permission bits a plain write of `path` ends with: an existing file keeps its own, a new one
    gets `mode` (0o666, or 0o777 for a script) less the umask, as `open()` and the shell would give it."""
    if mode is None and path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    return (0o666 if mode is None else mode) & ~_umask()


def _temp_for(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)


@contextmanager
def atomic_writer(path: str | Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without an error (flushed, fsynced);
    `mode`: the bits a new file asks for before the umask (0o777 for an executable script)."""
    path = Path(path)
    fd, tmp = _temp_for(path)
    try:
        os.fchmod(fd, plain_mode(path, mode))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    with atomic_writer(path, mode) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def _dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def read_rows(path: str | Path, schema: Schema | None = None) -> Iterator[dict]:
    """Yields rows from a .jsonl or .parquet file, each checked against `schema` (file:line in errors)."""
    path = Path(path)
    check_file(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):  # streamed, not the whole table
            for row in batch.to_pylist():
                i += 1
                yield schema.check(row, f"{path}:row {i}") if schema else row
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = _decode(raw, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RowError(
                    f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})"
                ) from None
            yield schema.check(row, f"{path}:{lineno}") if schema else row


def check_file(path: Path, what: str = "a .jsonl or .parquet file") -> None:
    """A path a stage reads must be a regular file: a directory or nothing there is named, not a traceback."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path}: is a directory, expected {what}; point the config at the file itself"
        )


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError(
            f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def count_rows(path: str | Path) -> int:
    """Rows of a .jsonl (non-blank lines) or .parquet file, for checking a file against its manifest."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp's `.<name>.<8 random chars>.tmp`


def sweep_temp_files(directory: str | Path, recursive: bool = True, skip: tuple[str, ...] = ()) -> list[Path]:
    """Deletes the temp files killed atomic writes left in `directory` (subdirectories named in `skip`
    are someone else's: a generate shard's parts belong to the shard's lock holder); returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    gone = []
    for p in sorted(directory.rglob("*") if recursive else directory.iterdir()):
        rel = p.relative_to(directory).parts
        if rel[0] in skip or not p.is_file() or not _TEMP.match(p.name):
            continue
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def write_rows(path: str | Path, rows: Iterable[dict], schema: Schema | None = None) -> int:
    """Writes all rows atomically; returns the row count. Rows are checked before anything is replaced."""
    path = Path(path)
    rows = [schema.check(r, f"{path} (writing row {i})") if schema else r for i, r in enumerate(rows, 1)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        fd, tmp = _temp_for(path)
        os.fchmod(fd, plain_mode(path))
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
