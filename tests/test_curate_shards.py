"""Curate over a sharded generate output: local workers and a single process write the same rows, a kill
-9 in the sample pass or in the merge resumes to the same rows, and every row lands exactly once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_curate import overrides, world

from conftest import REPO, output_bytes, output_rows
from distill.core.manifest import Manifest
from distill.core.schemas import SAMPLE
from distill.core.shards import dataset_record, write_shard

SHARDS = 3
STORIES = ["On Monday the baker counted eleven loaves.", "A red kite flew over twelve quiet hills.",
           "Nine sailors mapped the northern coast.", "The old clock in the hall struck seven twice."]  # fmt: skip
# A stage function patched to SIGKILL its own process at one point (as a kill -9 there would), then the CLI.
KILLER = """
import os, runpy, signal, sys
import distill.curate.parts as parts, distill.curate.stage as stage
where, seen = sys.argv[1], [0]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "sample_pass":  # inside unit 1, after its first chunk was written: a torn shard on disk
    chunk = parts._chunk
    def _chunk(rows, cfg, paths, ctx, reasons, writers, *a):
        if writers["rejected"].path.name == "unit-00001.parquet":
            seen[0] += 1
            if seen[0] == 2:
                die()
        chunk(rows, cfg, paths, ctx, reasons, writers, *a)
    parts._chunk = _chunk
else:  # the merge: funnel.json written, the manifest not yet
    stage.plot_funnel = die
sys.argv = ["distill", *sys.argv[2:]]
runpy.run_module("distill", run_name="__main__")
"""


def sharded_world(tmp_path, run: str) -> list[dict]:
    """world()'s samples four times over (distinct problems), as a finished 3-shard generate stage."""
    base, _ = world(tmp_path)
    rows = []
    for copy in range(4):
        for r in base:
            n = int(r["problem_id"][1:]) + 100 * copy
            rows.append(r | {"problem_id": f"p{n}", "problem": f"{STORIES[copy]} {r['problem']}"})
    pids = list(dict.fromkeys(r["problem_id"] for r in rows))
    gdir = tmp_path / "runs" / run / "generate"
    parts = gdir / "parts" / "genkey"
    shards = []
    for s in range(SHARDS):  # round-robin over problems, as generate shards them
        mine = set(pids[s::SHARDS])
        name = f"shard-{s:05d}-of-{SHARDS:05d}.parquet"
        shards.append(write_shard(parts / name, [r for r in rows if r["problem_id"] in mine], SAMPLE))
    rec = dataset_record(parts, shards) | {"problem_order": "round_robin"}
    Manifest("generate", "genkey", {}, outputs={"samples": rec}).write(gdir)
    return rows


def _args(tmp_path, run: str, *extra: str) -> list[str]:
    return [
        a.replace("run.name=t", f"run.name={run}")
        for a in overrides(tmp_path, "stage.chunk_samples=4", *extra)
    ]


def _outputs(tmp_path, run: str) -> dict:
    cur = tmp_path / "runs" / run / "curate"
    m = Manifest.read(cur / "manifest.json")
    names = [n for n, o in m.outputs.items() if o.get("format")]
    return {
        "rows": {n: output_rows(cur, n) for n in names},
        "bytes": {n: output_bytes(cur, n) for n in names},
        "funnel": json.loads((cur / "funnel.json").read_text()),
    }


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from conftest import run_distill

    tmp = tmp_path_factory.mktemp("single")
    rows = sharded_world(tmp, "one")
    run_distill(_args(tmp, "one"))
    return tmp, rows, _outputs(tmp, "one")


def test_every_row_lands_once_and_units_follow_the_shards(single):
    tmp, rows, out = single
    keys = {(r["problem_id"], r["sample_idx"]) for r in rows}
    rejected = {(r["problem_id"], r["sample_idx"]) for r in out["rows"]["rejected"]}
    kept = {
        (r["problem_id"], r["sample_idx"]) for n, rs in out["rows"].items() if n != "rejected" for r in rs
    }
    assert (
        rejected.isdisjoint(kept)
        and rejected | kept == keys
        and len(out["rows"]["rejected"]) == len(rejected)
    )
    assert out["funnel"]["input"] == len(rows) and out["funnel"]["kept"] == len(kept)
    assert set(out["bytes"]["phase1"]) == {f"unit-{u:05d}.parquet" for u in range(SHARDS)}
    # The problem pass takes problems in their own order, not shard by shard: p205 (a duplicate of p203,
    # after it in the problems, but in shard 0 while p203 is in shard 2) is the one dropped.
    dup = {r["problem_id"] for r in out["rows"]["rejected"] if r["reject_reason"] == "duplicate_problem"}
    assert "p205" in dup and "p203" not in dup


def test_two_local_workers_write_the_single_process_rows(single, tmp_path):
    from conftest import run_distill

    _, _, want = single
    sharded_world(tmp_path, "two")
    run_distill(_args(tmp_path, "two", "stage.workers=2"))
    logs = sorted(p.name for p in (tmp_path / "runs/two/curate").glob("worker-shard-*.log"))
    assert logs == ["worker-shard-00000.log", "worker-shard-00001.log"]  # two processes did the units
    got = _outputs(tmp_path, "two")
    assert got["rows"] == want["rows"] and got["bytes"] == want["bytes"] and got["funnel"] == want["funnel"]


@pytest.mark.parametrize("where", ["sample_pass", "merge"])
def test_kill_9_then_rerun_writes_the_same_rows(single, tmp_path, where):
    from conftest import run_distill

    _, _, want = single
    sharded_world(tmp_path, "k")
    args = _args(tmp_path, "k", "stage.verify.num_workers=0")
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, where, *args], cwd=REPO, capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    cur = tmp_path / "runs/k/curate"
    assert not (cur / "manifest.json").exists()
    units = sorted(p.name for p in cur.glob("parts/*/unit-*.manifest.json"))
    if where == "sample_pass":
        assert units == ["unit-00000.manifest.json"] and list(cur.glob("parts/*/*/.unit-00001.parquet.*.tmp"))
    else:
        assert len(units) == SHARDS and (cur / "funnel.json").exists()
    m = run_distill(_args(tmp_path, "k"))["curate"]
    assert not list(cur.rglob("*.tmp")), "the killed write's temp files are swept"
    got = _outputs(tmp_path, "k")
    assert got["rows"] == want["rows"] and got["bytes"] == want["bytes"] and got["funnel"] == want["funnel"]
    assert m.metrics["input"] == want["funnel"]["input"]
