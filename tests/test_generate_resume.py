"""SIGKILL a generating process at several points; the rerun ends with exactly the uninterrupted rows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, distill_cmd, output_bytes, run_distill

pytestmark = pytest.mark.slow

ARGS = [
    "stage=generate",
    "stage.engine.backend=hf",
    "stage.engine.hf_threads=1",
    "data.train.limit=24",
    "stage.sampling.n=2",
    "stage.chunk_problems=2",
    "stage.progress=false",
]


def _lines(part_dir: Path) -> int:
    n = 0
    for f in part_dir.glob("*/shard-*.jsonl") if part_dir.exists() else []:
        try:
            n += f.read_bytes().count(b"\n")
        except FileNotFoundError:  # a finished shard's log is deleted once its Parquet file is written
            pass
    return n


def _kill_when(root: Path, min_lines: int, timeout: float = 180) -> int:
    """Starts the stage in a subprocess and SIGKILLs it once `min_lines` rows are on disk."""
    proc = subprocess.Popen(
        distill_cmd(*ARGS, f"run.root={root}"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = root / "toy" / "generate" / "parts"
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _lines(parts) >= min_lines:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    return _lines(parts)


def test_sigkill_at_three_points_then_resume(tmp_path):
    ref_root = tmp_path / "ref"
    run_distill([*ARGS, f"run.root={ref_root}"])
    ref = output_bytes(ref_root / "toy" / "generate", "samples")

    root = tmp_path / "killed"
    seen = [_kill_when(root, n) for n in (0, 6, 20)]  # during start-up, early, late
    assert seen[0] < seen[2] < 48
    part = next((root / "toy" / "generate" / "parts").glob("*/shard-*.jsonl"))
    with open(part, "ab") as f:  # and a write torn mid-line, as a kill inside write() would leave
        f.write(b'{"problem_id": "toy-train-000')
    m = run_distill([*ARGS, f"run.root={root}"])["generate"]
    assert output_bytes(root / "toy" / "generate", "samples") == ref  # byte-identical shards
    assert m.metrics["rows"] == 48
    assert 0 < m.metrics["generated_samples_this_run"] < 48  # it resumed rather than starting over
