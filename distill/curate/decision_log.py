"""Recorded parser decisions shared by the verifier's worker processes while they run.

A LaTeX answer of a token-type sequence no process has met costs ANTLR 10-70 ms (full-LL prediction, a
growing DFA); once its decisions are recorded, every answer of that sequence replays them in ~1 ms
(`mv_speedups.two_stage_latex_parser`). Without sharing, each worker pays for every sequence it meets,
or a serial pass in the parent pays for all of them before the fork (a third of the stage's time on two
cores). Here each worker appends what it records to one file and, before recording a sequence itself,
reads what the others have appended: most sequences are paid for once, by whichever worker meets them
first, and no process waits for another.

A recording is a pure function of its key (the grammar's decisions depend only on token types), so one
made in another process is the one this process would make. The file is append-only; each record is
length-prefixed and checksummed, written whole under an exclusive lock, and a reader takes only complete
records whose checksum holds (anything else is left for a later read, or skipped as damaged: the reader
then records that sequence itself).
"""

from __future__ import annotations

import fcntl
import os
import pickle
import struct
import tempfile
import zlib

_HEAD = struct.Struct("<II")  # payload length, crc32 of the payload
ACTIVE: list[DecisionLog | None] = [None]  # this process's log, read by `mv_speedups`' parser patch


def share(log: DecisionLog | None) -> None:
    """Share this process's recorded parser decisions through `log` (None: stop sharing)."""
    ACTIVE[0] = log


class DecisionLog:
    """One append-only file of (token-type key, decisions or None for "does not parse") records."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        self.offset = 0  # bytes of the file this process has read
        self.pid = -1

    @classmethod
    def create(cls) -> DecisionLog:
        """A new empty log in shared memory where there is one (no disk writes), else the temp dir."""
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="distill-decisions-", suffix=".log", dir=base)
        os.close(fd)
        return cls(path)

    def _fd(self) -> int:
        # A forked worker must not share the parent's descriptor offset or lock state: open its own.
        if self.fd is None or self.pid != os.getpid():
            self.fd, self.pid, self.offset = os.open(self.path, os.O_RDWR | os.O_APPEND), os.getpid(), 0
        return self.fd

    def publish(self, key: str, decisions: tuple | None) -> None:
        """Appends one record (failures to write are ignored: sharing is only a speed-up)."""
        payload = pickle.dumps((key, decisions), protocol=pickle.HIGHEST_PROTOCOL)
        blob = _HEAD.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            fd = self._fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, blob)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass

    def pull(self) -> list[tuple[str, tuple | None]]:
        """The complete records appended since this process last read."""
        try:
            fd = self._fd()
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - self.offset, self.offset) if size > self.offset else b""
        except OSError:
            return []
        out, i = [], 0
        while i + _HEAD.size <= len(data):
            n, crc = _HEAD.unpack_from(data, i)
            end = i + _HEAD.size + n
            if end > len(data):
                break  # a record still being written: read it next time
            payload = data[i + _HEAD.size : end]
            if zlib.crc32(payload) == crc:
                try:
                    key, decisions = pickle.loads(payload)
                except Exception:  # noqa: BLE001 (damaged: skipped, this process records the key itself)
                    pass
                else:
                    if isinstance(key, str) and (decisions is None or isinstance(decisions, tuple)):
                        out.append((key, decisions))
            i = end
        self.offset += i
        return out

    def remove(self) -> None:
        if self.fd is not None and self.pid == os.getpid():
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.path)
        except OSError:
            pass
