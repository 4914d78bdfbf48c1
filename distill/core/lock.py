"""A run lock per stage: one process at a time works in a stage's directory of a run.

Two drivers on one run would both append to the same shard logs (every row twice) or both train in one
phase directory. The lock is an advisory `flock` on `<run>/<stage>/.lock` (on Linux NFS, flock is
emulated by byte-range locks that the server arbitrates across hosts), held by the process that decides
what the stage writes: the local driver (`python -m distill`), or the Slurm job that runs the stage
(`python -m distill.cluster.job run`). Not by training ranks: they are the driver's children, die with it
(`die_with_parent`) and never decide what to write; one holder per phase is the driver that launched them.
A generate array task holds only its shard's lock (`.lock.shard-00003-of-00008`), so the tasks of one
array run side by side, while the merge job (and any whole-stage driver) holds the stage lock and takes
each shard's lock in turn before it touches that shard.

The kernel drops an flock when its holder dies, however it dies (SIGKILL included): a lock file whose
lock can be taken belongs to a dead process, is taken over, and the takeover is announced. The file holds
the holder's pid, host and command, so a second process fails at once naming them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType


class RunLocked(RuntimeError):
    """Another live process holds the lock; the message names its pid, host and start time."""


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}


class RunLock:
    """`with RunLock(path, what):` holds an exclusive flock on `path` for the block (state: the open fd)."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = Path(path), what
        self.fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fd)
            os.close(fd)
            raise RunLocked(
                f"{self.what} is already running: pid {h.get('pid', '?')} on host {h.get('host', '?')} holds "
                f"{self.path} since {h.get('since', '?')} ({h.get('cmd', '?')}); wait for it to finish or stop "
                "that process, then rerun (it resumes where the other left off)"
            ) from None
        prev = _holder(fd)
        if prev.get("pid"):
            self.took_over = prev
            print(
                f"[distill] {self.what}: taking over the lock of pid {prev['pid']} on {prev.get('host', '?')} "
                f"(since {prev.get('since', '?')}), which is no longer running",
                file=sys.stderr,
                flush=True,
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cmd": " ".join(sys.argv)[:300],
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # a clean exit leaves no holder to take over
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_path(stage_dir: Path, part: str | None = None) -> Path:
    """`<run>/<stage>/.lock`, or a part's own lock beside it (`.lock.<part>`)."""
    return stage_dir / (".lock" if part is None else f".lock.{part}")
