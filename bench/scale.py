"""The data plane at scale: peak memory per stage, disk per sample and curate throughput, over a 16x range.

    python bench/scale.py                      # 1k, 4k, 16k samples (8 a problem, ~10 KB of text each)
    python bench/scale.py --sizes 10000 40000 160000

For each size, reasoning-shaped synthetic traces (`bench/scale_data.py`) are written as generate's own
shard logs, so `python -m distill stage=generate` finds every problem done and only finishes the shards
into Parquet (its engine is never started); then curate reads that generate directory with 1 and 2 local
workers, and train's data preparation (the phase's shards through `datasets`, the length check, TRL's
tokenising and packing maps) runs on curate's phase 1, without a training step. Each stage is a separate
command whose process tree (parent and workers) is sampled for its summed RSS; CPU time is the tree's
(RUSAGE_CHILDREN), so samples per CPU-second is a per-core rate that other load on the machine does not
change. At the largest size the same traces as one JSONL file (today's format: generate's log rows) are
curated by this code and by the code before the data plane (`--old-rev`, default 21f4a3e, exported
with `git archive`), for the throughput ratio. The last line is the RESULT line with the three goals.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scale_report import report  # noqa: E402

ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
MAX_LENGTH = 131072  # student tokens: above the longest synthetic trace, so no pair is cut or dropped
NUM_SHARDS = 4  # generate shards = curate units: 2 workers have units to share


def tree_rss_kb(root: int) -> int:
    """Summed RSS of `root` and all its descendants (as /work/shared/tools/peak_rss.py counts it)."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{p}/statm") as f:
                rss[int(p)] = int(f.read().split()[1]) * page_kb
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += kids.get(p, [])
    return total


def measure(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Runs `cmd`; its tree's peak RSS (sampled every 0.1 s), wall and CPU seconds. Fails loudly."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss_kb(proc.pid))
                time.sleep(0.1)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        t.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); see {log}:\n{log.read_text()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"peak_mb": peak[0] / 1024, "wall_s": wall, "cpu_s": cpu}


def _gen_overrides(root: Path, n: int) -> list[str]:
    return ["stage=generate", f"run.root={root}", f"run.name=s{n}", f"data.train.path={root / f'problems-{n}.jsonl'}",
            f"stage.sampling.n={8}", f"stage.num_shards={NUM_SHARDS}", "stage.progress=false", "wandb.enabled=false"]  # fmt: skip


def prepare(root: Path, n: int) -> Path:
    """The problems file, generate's shard logs (every problem done) and the same rows as one JSONL."""
    import scale_data
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from distill.core.io import AppendLog
    from distill.core.paths import Paths
    from distill.core.problems import load_problems, shard_of
    from distill.core.schemas import SAMPLE
    from distill.generate.stage import _key, shard_name
    from distill.pipeline import register_configs, resolve_stage

    scale_data.write_problems(root / f"problems-{n}.jsonl", n // scale_data.SAMPLES_PER_PROBLEM)
    overrides = _gen_overrides(root, n)
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = resolve_stage(compose(config_name="config", overrides=overrides), "generate", overrides)
    paths = Paths.for_run(str(root), f"s{n}", REPO)
    key = _key(cfg, paths)[0]  # the stage's own key: the run finds these logs as its own
    parts = paths.stage_dir("generate") / "parts" / key
    parts.mkdir(parents=True, exist_ok=True)
    probs = load_problems(cfg.data.train, paths)
    jsonl = root / f"samples-{n}.jsonl"
    for s in range(NUM_SHARDS):
        log = AppendLog(parts / f"{shard_name(s, NUM_SHARDS)}.jsonl", SAMPLE)
        mine = shard_of(probs, s, NUM_SHARDS)
        for i in range(0, len(mine), 64):
            log.append(list(scale_data.samples(mine[i : i + 64])))
    out = AppendLog(jsonl, SAMPLE)  # today's JSONL: the same rows, in problem order, one file
    for i in range(0, len(probs), 64):
        out.append(list(scale_data.samples(probs[i : i + 64])))
    return jsonl


def distill_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "distill", *overrides]


def curate_overrides(root: Path, name: str, inp: Path, quick: bool, *extra: str) -> list[str]:
    """Curate as the toy experiment configures it; --quick leaves out the length check in student tokens
    (its tokenizer load is most of a small run's start-up), for this code and the old alike."""
    lengths = "stage.lengths.max_length=null" if quick else f"stages.train.max_length={MAX_LENGTH}"
    return ["stage=curate", f"run.root={root}", f"run.name={name}", f"stage.input={inp}",
            "stage.progress=false", "wandb.enabled=false", lengths, *extra]  # fmt: skip


def train_plan(root: Path, n: int) -> Path:
    """Train's plan for phase 1 on the 1-worker curate's phase shards, as the driver writes it."""
    from distill.core.manifest import Manifest
    from distill.core.shards import dataset_files
    from distill.train.stage import default_hparams, worker_plan

    m = Manifest.read(root / f"s{n}-c1" / "curate" / "manifest.json")
    h = default_hparams(max_length=MAX_LENGTH, packing=True, attn_implementation="sdpa", progress=False)
    plan = worker_plan(phase="phase1", init_model=str(REPO / "data/toy/student"),
                       train_file=[str(f) for f in dataset_files(m.outputs["phase1"])],
                       output_dir=root / f"s{n}-train" / "phase1", hparams=h, dataset_num_proc=2,
                       wandb={"enabled": False, "name": "scale"})  # fmt: skip
    path = root / f"plan-{n}.json"
    path.write_text(json.dumps(plan))
    return path


def train_prep(plan_path: str) -> None:
    """The phase's data preparation only: the trainer is built (datasets load, length check, TRL's
    tokenising and packing maps) and not trained."""
    from distill.train.worker import build_trainer, init_distributed

    plan = json.loads(Path(plan_path).read_text())
    init_distributed(plan)
    trainer = build_trainer(plan)
    print(f"train data prepared: {len(trainer.train_dataset)} packed rows", flush=True)


def du(paths: list[Path]) -> int:
    return sum(p.stat().st_size for d in paths for p in ([d] if d.is_file() else d.rglob("*")) if p.is_file())


def run_size(root: Path, n: int, quick: bool) -> dict:
    """Every stage at one size. --quick: generate, and one curate (of the JSONL, which the throughput
    comparison then reuses), no 2-worker curate and no train data preparation."""
    jsonl = prepare(root, n)
    logs = root / "logs"
    gen_dir = root / f"s{n}" / "generate"
    r = {"samples": n, "jsonl_bytes": jsonl.stat().st_size}
    r["generate"] = _step(f"generate {n}", distill_cmd(*_gen_overrides(root, n)), REPO, logs / f"gen-{n}.log")
    r["parquet_bytes"] = du(list(gen_dir.rglob("shard-*.parquet")))
    if quick:
        name = f"new-jsonl-{n}"
        r["curate_w1"] = _step(f"curate {n} (JSONL)", distill_cmd(*curate_overrides(root, name, jsonl, True)),
                               REPO, logs / f"curate-new-jsonl-{n}.log")  # fmt: skip
        r["curated_bytes"] = du([root / name / "curate" / "parts"])
        return r
    for w in (1, 2):
        cmd = distill_cmd(*curate_overrides(root, f"s{n}-c{w}", gen_dir, False, f"stage.workers={w}"))
        r[f"curate_w{w}"] = _step(f"curate {n} w{w}", cmd, REPO, logs / f"curate-{n}-w{w}.log")
    r["curated_bytes"] = du([root / f"s{n}-c1" / "curate" / "parts"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--train-prep", str(train_plan(root, n))]
    r["train_prep"] = _step(f"train data {n}", cmd, REPO, logs / f"train-{n}.log")
    return r


def _step(what: str, cmd: list[str], cwd: Path, log: Path) -> dict:
    m = measure(cmd, cwd, log)
    print(
        f"[scale]   {what}: {m['wall_s']:.1f} s, {m['cpu_s']:.1f} CPU-s, peak {m['peak_mb']:.0f} MB",
        flush=True,
    )
    return m


def old_worktree(root: Path, rev: str) -> Path:
    """The code before the data plane, exported beside this one (the shared virtualenv linked in)."""
    wt = root / f"old-{rev}"
    if not wt.exists():  # an exported tree, not a git worktree: nothing is registered in the repository
        wt.mkdir()
        tar = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(wt)], input=tar.stdout, check=True)
        (wt / ".venv").symlink_to((REPO / ".venv").resolve())
    return wt


def compare(root: Path, r: dict, rev: str, quick: bool) -> dict:
    """Curate of the same JSONL by this code and by `rev`'s, one process each (verify pool: all cores)."""
    n = r["samples"]
    jsonl, logs, out = root / f"samples-{n}.jsonl", root / "logs", {}
    for who, cwd in (("new", REPO), ("old", old_worktree(root, rev))):
        if who == "new" and quick:  # run_size's one curate was this one
            out[who] = dict(r["curate_w1"])
        else:
            cmd = distill_cmd(*curate_overrides(root, f"{who}-jsonl-{n}", jsonl, quick))
            out[who] = _step(f"curate {n} (JSONL, {who})", cmd, cwd, logs / f"curate-{who}-jsonl-{n}.log")
        fun = json.loads((root / f"{who}-jsonl-{n}" / "curate" / "funnel.json").read_text())
        out[who]["funnel"] = {k: fun[k] for k in ("input", "kept") if k in fun}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="samples per size")
    p.add_argument("--work", type=Path, default=None, help="working directory (default: a new temp dir)")
    p.add_argument("--old-rev", default="21f4a3e", help="the code to compare curate throughput against")
    p.add_argument("--quick", action="store_true", help="fewer stages and no length check (for the test)")
    p.add_argument("--train-prep", help=argparse.SUPPRESS)  # internal: one measured train data preparation
    a = p.parse_args(argv)
    if a.train_prep:
        train_prep(a.train_prep)
        return 0
    import tempfile

    root = (a.work or Path(tempfile.mkdtemp(prefix="distill-scale-"))).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    print(f"[scale] work dir {root}; load average {open('/proc/loadavg').read().strip()}", flush=True)
    sizes = sorted(a.sizes)
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        results.append(run_size(root, n, a.quick))
        print(f"[scale] {n} samples measured in {time.perf_counter() - t0:.0f}s", flush=True)
    cmp = compare(root, results[-1], a.old_rev, a.quick)
    report(results, cmp, os.cpu_count() or 1, open("/proc/loadavg").read().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
