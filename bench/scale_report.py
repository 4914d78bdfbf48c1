"""`bench/scale.py`'s summary: the table per size, the throughput comparison, the 9.1M projection, RESULT."""

from __future__ import annotations

SEED_TRACES = 9_100_000  # ReasonLite's teacher traces (343K problems)
NODE_CORES = 64
NODES = 16
GOALS = {"rss_growth": 1.3, "disk_ratio": 0.5, "throughput_ratio": 1.0}
STAGES = ("generate", "curate_w1", "curate_w2", "train_prep")


def _hms(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def _cell(r: dict, stage: str, key: str, fmt: str) -> str:
    return format(r[stage][key], fmt) if stage in r else "-"


def table(results: list[dict]) -> None:
    head = ["samples", "JSONL MB", "Parquet MB", "B/sample pq", "B/sample jsonl",
            *(f"{s} peak MB" for s in STAGES), "curate w1 s", "curate w2 s", "curate samples/CPU-s"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        n = r["samples"]
        cells = [n, f"{r['jsonl_bytes'] / 1e6:.0f}", f"{r['parquet_bytes'] / 1e6:.0f}",
                 f"{r['parquet_bytes'] / n:.0f}", f"{r['jsonl_bytes'] / n:.0f}",
                 *(_cell(r, s, "peak_mb", ".0f") for s in STAGES),
                 _cell(r, "curate_w1", "wall_s", ".1f"), _cell(r, "curate_w2", "wall_s", ".1f"),
                 f"{n / r['curate_w1']['cpu_s']:.0f}"]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")


def report(results: list[dict], cmp: dict, cores: int, load: str) -> None:
    """Prints the table, the ratios and the projection; the RESULT line last."""
    first, last = results[0], results[-1]
    n = last["samples"]
    print(f"\nsizes {[r['samples'] for r in results]} samples ({last['samples'] / first['samples']:.0f}x range), "
          f"{cores} cores, load average {load}")  # fmt: skip
    table(results)
    growth = {s: last[s]["peak_mb"] / first[s]["peak_mb"] for s in STAGES if s in last}
    print("peak RSS growth, largest / smallest: " + ", ".join(f"{s} {g:.2f}x" for s, g in growth.items()))
    new, old = cmp["new"], cmp["old"]
    tp = old["cpu_s"] / new["cpu_s"]  # same samples: per-CPU-second rates' ratio
    print(f"curate of the same {n}-sample JSONL, 1 process: new {n / new['cpu_s']:.0f} samples/CPU-s "
          f"({new['wall_s']:.1f} s wall, peak {new['peak_mb']:.0f} MB, {new['funnel']}), "
          f"old {n / old['cpu_s']:.0f} samples/CPU-s ({old['wall_s']:.1f} s wall, peak {old['peak_mb']:.0f} MB, "
          f"{old['funnel']}): {tp:.2f}x per core; wall {old['wall_s'] / new['wall_s']:.2f}x")  # fmt: skip
    w2 = last.get("curate_w2", last["curate_w1"])
    per_core = n / w2["cpu_s"]  # samples per CPU-second, 2 workers on generate's shards (--quick: 1)
    per_core_wall = n / (w2["wall_s"] * cores)  # the same, charging every core for the whole wall time
    pq, cur = last["parquet_bytes"] / n, last["curated_bytes"] / n
    print(f"projection for {SEED_TRACES / 1e6:.1f}M traces at {per_core:.0f} samples/CPU-s "
          f"({per_core_wall:.0f} samples/core-s counting idle cores): curate on one {NODE_CORES}-core node "
          f"{_hms(SEED_TRACES / (per_core * NODE_CORES))} ({_hms(SEED_TRACES / (per_core_wall * NODE_CORES))}), "
          f"on {NODES} nodes {_hms(SEED_TRACES / (per_core * NODE_CORES * NODES))} "
          f"({_hms(SEED_TRACES / (per_core_wall * NODE_CORES * NODES))}); disk: generate shards "
          f"{SEED_TRACES * pq / 1e9:.0f} GB (JSONL {SEED_TRACES * last['jsonl_bytes'] / n / 1e9:.0f} GB), "
          f"curate outputs {SEED_TRACES * cur / 1e9:.0f} GB")  # fmt: skip
    vals = {"rss_growth": max(growth.values()), "disk_ratio": last["parquet_bytes"] / last["jsonl_bytes"],
            "throughput_ratio": tp}  # fmt: skip
    ok = (vals["rss_growth"] <= GOALS["rss_growth"] and vals["disk_ratio"] <= GOALS["disk_ratio"]
          and vals["throughput_ratio"] >= GOALS["throughput_ratio"])  # fmt: skip
    print(
        f"RESULT scale rss_growth={vals['rss_growth']:.2f} goal<=1.3 disk_ratio={vals['disk_ratio']:.3f} "
        f"goal<=0.5 throughput_ratio={vals['throughput_ratio']:.2f} goal>=1.0 {'PASS' if ok else 'FAIL'}"
    )
