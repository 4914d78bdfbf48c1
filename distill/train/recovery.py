"""What a failed or killed phase leaves behind, read back: complete checkpoints and the ranks' first error.

A kill during `save_checkpoint` leaves a newest checkpoint without `trainer_state.json` (the Trainer writes
it last) or with a weights file cut short; resuming from it fails, and ignoring every checkpoint restarts
the phase from step 0. The newest checkpoint that is complete is used instead, and the driver deletes the
incomplete ones newer than it (the Trainer would otherwise save into a directory holding stale files).

A rank that fails writes its exception to `<phase>/rank-<rank>.error.json` before it exits; torchrun then
reports only `ChildFailedError`, and the other ranks die of the broken collective. The first error by time
is the cause: the driver raises with it and points at its traceback.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import traceback
import zipfile
from pathlib import Path

_STEP = re.compile(r"^checkpoint-(\d+)$")


def _safetensors_whole(path: Path) -> bool:
    """The header's byte ranges end exactly at the end of the file (a cut or padded file does not)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def incomplete_reason(ckpt: Path) -> str | None:
    """Why a checkpoint directory cannot be resumed from, or None when it can."""
    state = ckpt / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return f"{state.name} missing or unreadable"
    for f in sorted(ckpt.glob("*.safetensors")):
        if not _safetensors_whole(f):
            return f"{f.name} is cut short or has trailing data"
    for f in sorted(ckpt.glob("*.pt")) + sorted(ckpt.glob("*.pth")):
        if not zipfile.is_zipfile(f):
            return f"{f.name} is not a whole torch archive"
    if not any(ckpt.glob("*.safetensors")) and not any(ckpt.glob("global_step*")):
        return "no weights"
    return None


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """`checkpoint-<step>` directories, newest (highest step) first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m[1]), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def newest_complete(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that can be resumed from (older ones are fallbacks), or None."""
    return next((p for p in checkpoints(ckpt_dir) if incomplete_reason(p) is None), None)


def sweep_incomplete(ckpt_dir: Path) -> list[tuple[Path, str]]:
    """Deletes the incomplete checkpoints newer than the newest complete one; returns them with why."""
    import shutil

    gone = []
    for p in checkpoints(ckpt_dir):
        if (why := incomplete_reason(p)) is None:
            break
        shutil.rmtree(p, ignore_errors=True)
        gone.append((p, why))
    return gone


def error_file(out: Path, rank: int) -> Path:
    return out / f"rank-{rank:03d}.error.json"


def write_rank_error(out: Path, exc: BaseException) -> None:
    """Called by a failing rank: its exception, with time and rank, for the driver to report."""
    rank = int(os.environ.get("RANK", "0"))
    record = {
        "rank": rank,
        "host": os.uname().nodename,
        "time": time.time(),
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-20000:],
    }
    try:
        error_file(out, rank).write_text(json.dumps(record, indent=1))
    except OSError:
        pass  # the error itself still propagates; the driver falls back to the log


def clear_rank_errors(out: Path) -> None:
    for f in out.glob("rank-*.error.json"):
        f.unlink(missing_ok=True)


def first_rank_error(out: Path) -> dict | None:
    """The earliest error a rank recorded (the cause; later ones are usually its consequences)."""
    errors = []
    for f in out.glob("rank-*.error.json"):
        try:
            errors.append(json.loads(f.read_text()) | {"file": str(f)})
        except (OSError, ValueError):
            continue
    return min(errors, key=lambda e: (e["time"], e["rank"])) if errors else None
