"""The two toy-world ablations of docs/results.md, run by config alone through `python -m distill`.

    .venv/bin/python scripts/ablations.py [--root runs]

1. Baseline: the default pipeline (verified data, two phases), run `abl-base`.
2. Unverified data: curate the baseline's own teacher samples with `stage.verify.keep_wrong=true` (wrong
   answers stay in), then the same two-phase training; run `abl-unverified`.
3. One phase at the same number of optimizer steps: train on phase 1's data only, with epochs chosen so
   that its steps equal the baseline's phase 1 + phase 2 steps; run `abl-onephase`.

Every run is a normal run directory, so a rerun skips what is finished. Prints one table (held-out avg@k
per model and category, same sampling settings for all) and writes it as JSON beside the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def distill(root: Path, name: str, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "distill", f"run.root={root}", f"run.name={name}", *overrides]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def phase_steps(run: Path, phase: str) -> int:
    return read(run / "train" / phase / "manifest.json")["metrics"]["global_step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs")
    root = Path(ap.parse_args().root).resolve()
    base = root / "abl-base"
    distill(root, "abl-base")
    samples = str(base / "generate")  # curate reads the base run's generate shards in place

    distill(root, "abl-unverified", "stage=curate", f"stage.input={samples}", "stage.verify.keep_wrong=true")
    distill(root, "abl-unverified", "stage=train")
    distill(root, "abl-unverified", "stage=eval", "stage.models=[train]")

    s1, s2 = phase_steps(base, "phase1"), phase_steps(base, "phase2")
    base_epochs = read(base / "train" / "phase1" / "plan.json")["hparams"]["epochs"]
    epochs = round(base_epochs * (s1 + s2) / s1, 3)  # steps scale with epochs on a fixed dataset
    distill(root, "abl-onephase", "stage=curate", f"stage.input={samples}")
    distill(root, "abl-onephase", "stage=train", "stage.phases=[phase1]", f"stage.epochs={epochs}")
    distill(root, "abl-onephase", "stage=eval", "stage.models=[train]")

    rows = {}
    for label, run, model in [
        ("teacher", base, "teacher"),
        ("student, initial weights", base, "student"),
        ("verified, phase 1", base, "phase1"),
        ("verified, phase 1 -> 2 (baseline)", base, "phase2"),
        ("unverified, phase 1 -> 2", root / "abl-unverified", "phase2"),
        ("verified, one phase, same steps", root / "abl-onephase", "phase1"),
    ]:
        res = read(run / "eval" / "metrics.json")["models"][model]
        steps = None
        if model.startswith("phase"):
            steps = sum(phase_steps(run, p) for p in ("phase1", "phase2") if p <= model)
        kept = read(run / "curate" / "manifest.json")["metrics"]["kept"] if steps else None
        rows[label] = {"avg@k": {c: s["avg@k"] for c, s in res.items()}, "steps": steps, "train_rows": kept}
    out = root / "ablations.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    cats = sorted({c for r in rows.values() for c in r["avg@k"]})
    print(f"\n{'model':36s} " + " ".join(f"{c:>8s}" for c in cats) + "    steps  rows")
    for label, r in rows.items():
        vals = " ".join(f"{r['avg@k'].get(c, float('nan')):8.3f}" for c in cats)
        print(f"{label:36s} {vals} {r['steps'] or '':>8} {r['train_rows'] or '':>5}")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
