"""On-policy distillation vs equal-compute SFT on the toy world (docs/results.md), by config alone.

    .venv/bin/python bench/on_policy_toy.py [--run runs/toy] [--seeds 0 1]

Starting from a finished toy run (phase 1 -> phase 2; run first if missing), for each seed it copies the run
(`<run>-op<seed>`, `<run>-sft<seed>`) and trains its third phase `onpolicy` as
  - kind on_policy after phase 2 (prompts: phase 2's problems; teacher: the run's), and
  - kind sft: SFT continued on phase 2's pairs for the same student forward+backward tokens
    (the on-policy phase's prompt+completion tokens; epochs = those / phase 2's tokens per epoch),
then evaluates both (held-out, k=4) and prints avg@4 / pass@4 with standard errors over problems, the paired
difference, and the on-policy cost per optimizer step. Last line: the ratios and the goals.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OP = {"lr": 1e-3, "epochs": 2, "per_device_batch_size": 4, "max_new_tokens": 160, "beta": 1.0}  # toy_onpolicy
TOY_OP = {
    "lr": 5e-4,
    "epochs": 0.32,
    "per_device_batch_size": 4,
    "max_new_tokens": 64,
    "beta": 1.0,
}  # toy.yaml's


def distill(run: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "distill", f"run.root={run.parent}", f"run.name={run.name}", *overrides]
    print("$", " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def phase(base: Path, tag: str, spec: dict) -> tuple[Path, dict]:
    """A copy of the base run that trains phase1 -> phase2 (up to date) -> `onpolicy` (the entry of
    conf/stage/train.yaml, here of kind `spec['kind']`), evaluated; returns the copy and the phase metrics."""
    run = base.parent / f"{base.name}-{tag}"
    if not run.exists():
        shutil.copytree(base, run, symlinks=True, ignore=shutil.ignore_patterns("onpolicy", "wandb"))
        (run / "train" / "manifest.json").unlink()  # it names the base's phase dirs
    over = [f"stage.per_phase.onpolicy.{k}={v}" for k, v in spec.items()]
    distill(run, "stage=train", "stage.phases=[phase1,phase2,onpolicy]", *over)
    distill(run, "stage=eval", "stage.models=[train]")
    return run, read(run / "train" / "onpolicy" / "manifest.json")["metrics"]


def per_problem(run: Path, model: str) -> dict[str, list[bool]]:
    from distill.core.shards import iter_dataset

    out: dict[str, list[bool]] = {}
    rec = read(run / "eval" / model / "manifest.json")["outputs"]["samples"]
    for r in iter_dataset(rec, columns=["problem_id", "verdict"]):
        out.setdefault(r["problem_id"], []).append(bool(r["verdict"]))
    return out


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def arm(runs: list[Path], model: str) -> tuple[dict[str, float], dict[str, float]]:
    """Per-problem avg@4 and pass@4, averaged over the arm's seeds (one run per seed)."""
    per = [per_problem(r, model) for r in runs]
    pids = sorted(per[0])
    avg = {p: sum(sum(r[p]) / len(r[p]) for r in per) / len(per) for p in pids}
    pas = {p: sum(float(any(r[p])) for r in per) / len(per) for p in pids}
    return avg, pas


def seed_avgs(runs: list[Path], model: str) -> list[float]:
    return [mean_se([sum(v) / len(v) for v in per_problem(r, model).values()])[0] for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/toy")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--phase", choices=["long", "toy"], default="long",
                    help="long: experiment=toy_onpolicy's phase (98 steps); toy: experiment=toy's (16 steps)")  # fmt: skip
    a = ap.parse_args()
    op_spec = OP if a.phase == "long" else TOY_OP
    run = Path(a.run).resolve()
    if not (run / "eval" / "phase2" / "manifest.json").exists():
        distill(run, "pipeline=[generate,curate,train,eval]")
    p2_tokens = read(run / "train" / "phase2" / "manifest.json")["metrics"]["train_tokens_per_epoch"]
    cost, op_runs, sft_runs = [], [], []
    for s in a.seeds:
        r, m = phase(run, f"op{s}", {"kind": "on_policy", "source": "phase2", "seed": s, **op_spec})
        cost.append(m)
        op_runs.append(r)
        epochs = round(m["teacher_forward_tokens"] / p2_tokens, 4)
        r, _ = phase(
            run,
            f"sft{s}",  # the SFT phases' batch of 2 rows a rank (toy.yaml gives `onpolicy` 4 prompts)
            {"kind": "sft", "source": "phase2", "seed": s, "lr": op_spec["lr"], "epochs": epochs,
             "per_device_batch_size": 2},
        )  # fmt: skip
        sft_runs.append(r)
        print(
            f"seed {s}: on-policy {m['teacher_forward_tokens']} student fwd+bwd tokens; SFT epochs {epochs}"
        )
    arms = {
        "teacher": arm([run], "teacher"),
        "phase2": arm([run], "phase2"),
        "on-policy": arm(op_runs, "onpolicy"),
        "equal-compute SFT": arm(sft_runs, "onpolicy"),
    }
    teacher = arms["teacher"]
    print("| model | avg@4 ± SE | pass@4 ± SE | per seed avg@4 |")
    print("| --- | --- | --- | --- |")
    for name, (avg, pas) in arms.items():
        (ma, sa), (mp, sp) = mean_se(list(avg.values())), mean_se(list(pas.values()))
        runs = {"on-policy": op_runs, "equal-compute SFT": sft_runs}.get(name)
        per = ", ".join(f"{x:.3f}" for x in seed_avgs(runs, "onpolicy")) if runs else "-"
        print(f"| {name} | {ma:.3f} ± {sa:.3f} | {mp:.3f} ± {sp:.3f} | {per} |")
    op, sft = arms["on-policy"][0], arms["equal-compute SFT"][0]
    d, d_se = mean_se([op[p] - sft[p] for p in op])
    dp2, dp2_se = mean_se([op[p] - arms["phase2"][0][p] for p in op])
    print(
        f"on-policy - phase2: {dp2:+.3f} ± {dp2_se:.3f}; on-policy - SFT: {d:+.3f} ± {d_se:.3f} (paired by problem)"
    )
    for k in ("teacher_forward_tokens_per_step", "student_generated_tokens_per_step", "wall_s_per_step"):
        print(f"cost per optimizer step, {k}: {', '.join(f'{m[k]:.1f}' for m in cost)}")
    ratio = mean_se(list(op.values()))[0] / mean_se(list(teacher[0].values()))[0]
    print(f"on-policy/teacher avg@4 = {ratio:.3f} (goal >= 0.98); on-policy - SFT = {d:+.3f}, "
          f"{d / d_se if d_se else float('inf'):.1f} SE (goal > 2 SE)")  # fmt: skip


if __name__ == "__main__":
    main()
