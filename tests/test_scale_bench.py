"""bench/scale.py at tiny sizes: it runs every stage it measures and prints its table and RESULT line.

The numbers at 64 and 256 samples are start-up dominated, so only what holds at any size is asserted:
the table has a row per size, generate's Parquet shards are smaller than the same rows as JSONL (text
stored once, zstd), the old and new curate kept the same rows, and the RESULT line's ratios parse.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT = re.compile(
    r"^RESULT scale rss_growth=(?P<rss>[0-9.]+) goal<=1\.3 disk_ratio=(?P<disk>[0-9.]+) goal<=0\.5 "
    r"throughput_ratio=(?P<tp>[0-9.]+) goal>=1\.0 (?P<verdict>PASS|FAIL)$"
)


def test_scale_bench_runs_at_tiny_sizes_and_prints_its_result(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "bench" / "scale.py"),
        "--sizes",
        "64",
        "256",
        "--quick",
        "--work",
        str(tmp_path),
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    m = RESULT.match(lines[-1])
    assert m, f"last line is not the RESULT line: {lines[-1]!r}"
    rss, disk, tp = float(m["rss"]), float(m["disk"]), float(m["tp"])
    assert 0 < disk < 1, "Parquet shards must be smaller than the JSONL of the same rows"
    assert rss > 0 and tp > 0
    rows = [ln for ln in lines if re.match(r"^\| (64|256) \|", ln)]
    assert [r.split("|")[1].strip() for r in rows] == ["64", "256"]
    pq_b, jsonl_b = (float(x) for x in rows[-1].split("|")[4:6])  # bytes a sample, the largest size
    assert abs(pq_b / jsonl_b - disk) < 0.01, "the RESULT's disk ratio is the table's"
    same = [ln for ln in lines if ln.startswith("curate of the same")]
    assert len(same) == 1
    kept = re.findall(r"'kept': (\d+)", same[0])
    assert len(kept) == 2 and kept[0] == kept[1], "the old and new curate must keep the same rows"
    assert (tmp_path / "s256" / "generate" / "manifest.json").exists()
    assert not list((tmp_path / "s256" / "generate").rglob("*.jsonl")), "finished shards leave no log"
