"""The generate stage: n teacher samples per problem, sharded, resumable after SIGKILL.

Work is split into shards (round-robin over problems). Each shard appends finished problems to its own
log in flushed chunks; a restart drops a torn last line and any problem with fewer than n samples, then
generates only what is missing. Samples are seeded per problem, so a resumed or sharded run writes the
same rows as an uninterrupted one. The final `samples.jsonl` is the merge of all shards in problem order.
Local shard workers (`workers > 1`) are separate processes, started by `distill.generate.shards`.

A shard is worked on only under its lock (`<run>/generate/.lock.<shard>`: an array task holds its own, the
whole-stage driver takes each in turn), and a finished shard is checked before the merge: rows written
twice (two writers before locks existed) are dropped from its log, missing ones are generated again,
so no log state makes every rerun fail. A shard with no problems (more shards than problems) is empty.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.core.io import AppendLog, read_rows, write_rows
from distill.core.lock import RunLock, lock_path
from distill.core.manifest import Manifest, finished, model_fingerprint, stage_key, up_to_date
from distill.core.paths import Paths
from distill.core.problems import data_source, load_problems, shard_of, source_fingerprint
from distill.core.report import progress, summary_table
from distill.core.schemas import SAMPLE, RowError
from distill.core.tracking import log_stage_outputs
from distill.engines.sampler import Sampler, SamplerConfig
from distill.generate.shards import run_local_shards

log = logging.getLogger(__name__)
STAGE = "generate"


@dataclass
class GenerateConfig(SamplerConfig):
    name: str = "generate"
    shard: int | None = None
    num_shards: int = 1
    workers: int = 1  # shards generated at once on this node, each its own engine on its own GPUs


Config = GenerateConfig
# Fields that change how the stage runs but not what it writes: left out of the config key.
NOT_IN_KEY = {
    "progress",
    "shard",
    "workers",
    "chunk_problems",
    "engine.concurrency",
    "engine.hf_threads",
    "engine.base_url",
    "engine.api_key_env",
    "engine.max_retries",
    "engine.backoff_s",
    "engine.timeout_s",
}


def _key(cfg: DictConfig, paths: Paths) -> tuple[str, list[dict]]:
    g = cfg.stage
    src = cfg.data[g.problems]
    inputs = [source_fingerprint(src, paths)]
    if g.engine.backend != "openai":
        inputs.append(
            model_fingerprint(
                paths.resolve(cfg.teacher.path), cfg.teacher.name, cfg.teacher.revision, "teacher"
            )
        )
    keyed = {"stage": g, "teacher": cfg.teacher, "problems": src}
    return stage_key(keyed, [i["key"] for i in inputs], NOT_IN_KEY), inputs


def _complete_rows(log_: AppendLog, pids: set[str], n: int) -> tuple[list[dict], set[str]]:
    """Rows of problems that have exactly samples 0..n-1; the rest is dropped and regenerated."""
    rows = log_.rows()
    by_pid: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if r["problem_id"] in pids:
            by_pid[r["problem_id"]].setdefault(r["sample_idx"], r)
    done = {pid for pid, s in by_pid.items() if sorted(s) == list(range(n))}
    kept = [by_pid[pid][i] for pid in done for i in range(n)]
    if len(kept) != len(rows):
        log_.rewrite(kept)
    return kept, done


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def _run_shard(
    gen: Sampler, g: DictConfig, problems: list[dict], shard: int, parts: Path, key: str
) -> Manifest:
    name = shard_name(shard, g.num_shards)
    if m := finished(parts, key, f"{name}.manifest.json"):
        return m
    mine = shard_of(problems, shard, g.num_shards)
    log_ = AppendLog(parts / f"{name}.jsonl", SAMPLE)
    log_.path.touch()  # an empty shard (more shards than problems) has an empty log, not none
    kept, done = _complete_rows(log_, {p["problem_id"] for p in mine}, g.sampling.n)
    todo = [p for p in mine if p["problem_id"] not in done]
    with progress(len(mine), f"generate {name}", initial=len(done), enabled=g.progress) as bar:
        for i in range(0, len(todo), g.chunk_problems):
            rows = gen.run_chunk(todo[i : i + g.chunk_problems])
            log_.append(rows)
            bar.update(len(rows) // g.sampling.n)
            s = gen.stats
            bar.set_postfix(
                samples_s=f"{s['samples'] / max(s['generate_s'], 1e-9):.1f}",
                tok_s=f"{s['completion_tokens'] / max(s['generate_s'], 1e-9):.0f}",
            )
    out = Manifest(
        stage=STAGE,
        key=key,
        config={"shard": shard, "num_shards": g.num_shards},
        outputs={"samples": {"path": str(log_.path), "rows": len(mine) * g.sampling.n}},
        metrics={
            "problems": len(mine),
            "resumed_problems": len(done),
            "dropped_torn_bytes": log_.dropped_bytes,
        },
    )
    out.write(parts, f"{name}.manifest.json")
    return out


def _clear(parts: Path, shard: int | None, num_shards: int) -> None:
    """force=true: forget earlier work (one shard's, when a single array task is forced)."""
    if shard is None:
        shutil.rmtree(parts, ignore_errors=True)
        return
    name = shard_name(shard, num_shards)
    for f in (parts / f"{name}.jsonl", parts / f"{name}.manifest.json"):
        f.unlink(missing_ok=True)


def _repair_shard(parts: Path, name: str, mine: list[dict], n: int) -> bool:
    """A finished shard's log checked against its problems: duplicated rows (and rows of problems not in
    the shard) are dropped in place and its manifest re-hashed; False when rows are missing, so that the
    caller generates them again (the shard resumes: complete problems are kept)."""
    path, want = parts / f"{name}.jsonl", {(p["problem_id"], i) for p in mine for i in range(n)}
    if not path.exists():
        return not want
    rows = list(read_rows(path, SAMPLE))
    kept: dict[tuple[str, int], dict] = {}
    for r in rows:
        if (k := (r["problem_id"], r["sample_idx"])) in want:
            kept.setdefault(k, r)
    if len(kept) != len(rows):
        log.warning("%s: dropped %d duplicated or foreign rows", path, len(rows) - len(kept))
        print(
            f"[distill] generate {name}: repaired its log ({len(rows) - len(kept)} duplicated rows dropped)"
        )
        write_rows(path, list(kept.values()), SAMPLE)
        mpath = parts / f"{name}.manifest.json"
        if mpath.exists() and len(kept) == len(want):
            m = Manifest.read(mpath)
            m.outputs["samples"]["sha256"] = None  # taken again from the repaired log
            m.metrics["repaired_duplicate_rows"] = len(rows) - len(kept)
            m.write(parts, mpath.name)
    return len(kept) == len(want)


def _locked_shard(
    gen: Sampler, g: DictConfig, problems: list[dict], shard: int, out_dir: Path, key: str
) -> Manifest:
    """One shard under its lock (unless this process is the array task holding it already), temp files of
    its killed writes swept first, its finished log repaired or completed before it is merged."""
    parts, name = out_dir / "parts" / key, shard_name(shard, g.num_shards)
    held = g.shard is not None  # an array task / worker: distill.pipeline.run_locked took this lock
    with nullcontext() if held else RunLock(lock_path(out_dir, name), f"generate ({name})"):
        for f in parts.glob(f".{name}.*.tmp"):
            f.unlink(missing_ok=True)
        m = _run_shard(gen, g, problems, shard, parts, key)
        if not _repair_shard(parts, name, shard_of(problems, shard, g.num_shards), g.sampling.n):
            (parts / f"{name}.manifest.json").unlink(missing_ok=True)
            m = _run_shard(gen, g, problems, shard, parts, key)
    return m


def _merge(problems: list[dict], parts: Path, num_shards: int, n: int, out_path: Path) -> list[dict]:
    order = {p["problem_id"]: i for i, p in enumerate(problems)}
    rows = []
    for shard in range(num_shards):
        path = parts / f"{shard_name(shard, num_shards)}.jsonl"
        if path.exists() or shard_of(problems, shard, num_shards):
            rows += read_rows(path, SAMPLE)
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    if len(set(keys)) != len(keys) or len(keys) != len(problems) * n:
        raise RowError(
            f"{parts}: shards hold {len(keys)} rows ({len(set(keys))} distinct), expected {len(problems) * n}"
        )
    rows.sort(key=lambda r: (order[r["problem_id"]], r["sample_idx"]))
    write_rows(out_path, rows, SAMPLE)
    return rows


def _metrics(rows: list[dict], stats: dict) -> dict:
    gen_s = max(stats.get("generate_s", 0.0), 1e-9)
    ctoks = [r["completion_tokens"] for r in rows]
    return {
        "rows": len(rows),
        "problems": len({r["problem_id"] for r in rows}),
        "mean_completion_tokens": sum(ctoks) / max(len(ctoks), 1),
        "truncated_rate": sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1),
        "think_closed_rate": sum(r["response"] is not None for r in rows) / max(len(rows), 1),
        "samples_per_s": stats.get("samples", 0) / gen_s if stats.get("samples") else None,
        "tokens_per_s": stats.get("completion_tokens", 0) / gen_s if stats.get("samples") else None,
        "generated_samples_this_run": int(stats.get("samples", 0)),
    }


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    g = cfg.stage
    src = data_source(cfg, g.problems, "generate.problems")
    t_start = time.perf_counter()
    out_dir = paths.stage_dir(STAGE)
    key, inputs = _key(cfg, paths)
    if m := up_to_date(out_dir, key, cfg.force, "generate"):
        return m
    problems = load_problems(src, paths)
    parts = out_dir / "parts" / key
    if cfg.force:
        _clear(parts, g.shard, g.num_shards)
    if g.shard is None and g.workers > 1:
        todo = [
            s
            for s in range(g.num_shards)
            if not finished(parts, key, f"{shard_name(s, g.num_shards)}.manifest.json")
        ]
        run_local_shards(cfg, paths, todo, min(g.workers, len(todo) or 1))
    gen = Sampler(g.engine, cfg.teacher, paths, g.prompt_template, g.system_prompt, g.sampling)
    try:
        shards = [g.shard] if g.shard is not None else range(g.num_shards)
        shard_ms = [_locked_shard(gen, g, problems, s, out_dir, key) for s in shards]
    finally:
        gen.close()
    if g.shard is not None:
        return shard_ms[0]
    rows = _merge(problems, parts, g.num_shards, g.sampling.n, out_dir / "samples.jsonl")
    m = Manifest(
        stage=STAGE,
        key=key,
        config=OmegaConf.to_container(cfg.stage, resolve=True),
        inputs=inputs,
        outputs={"samples": {"path": str(out_dir / "samples.jsonl"), "rows": len(rows)}},
        metrics=_metrics(rows, gen.stats),
        timings={
            "engine_init_s": gen.stats.get("engine_init_s", 0.0),
            "generate_s": gen.stats.get("generate_s", 0.0),
            "total_s": time.perf_counter() - t_start,
        },
    )
    m.write(out_dir)
    log_stage_outputs(cfg, paths, m, "dataset", {"samples.jsonl": out_dir / "samples.jsonl"})
    summary_table("generate", m.metrics | m.timings)
    return m
