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
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
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
from distill.engines.sampler import ChunkFailed, Sampler, SamplerConfig
from distill.generate.passes import PassConfig, pass_samplings, samples_per_problem
from distill.generate.shards import run_local_shards

log = logging.getLogger(__name__)
STAGE = "generate"
STOP_AFTER_FAILED = 8  # problems failed in a row, none finished: the endpoint is down, not one bad problem


@dataclass
class GenerateConfig(SamplerConfig):
    name: str = "generate"
    shard: int | None = None
    num_shards: int = 1
    workers: int = 1  # shards generated at once on this node, each its own engine on its own GPUs
    # e.g. [{effort: medium}, {effort: high}]: every problem sampled once per pass, into one sample set
    passes: list[PassConfig] = field(default_factory=list)


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
    "engine.max_retry_after_s",
    "engine.timeout_s",
}


# Fields added after a release, at the value that generates what that release generated (no effort in the
# prompt, no extra template kwargs, one pass, the think split): left out of the key while they hold it.
NEUTRAL = {
    "stage.passes": [],
    "stage.sampling.reasoning_effort": None,
    "stage.sampling.chat_template_kwargs": {},
    "teacher.reasoning_format": "auto",
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
    return stage_key(keyed, [i["key"] for i in inputs], NOT_IN_KEY, neutral=NEUTRAL), inputs


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
    n = samples_per_problem(g)
    kept, done = _complete_rows(log_, {p["problem_id"] for p in mine}, n)
    todo = [p for p in mine if p["problem_id"] not in done]
    before = gen.endpoint_counts()
    with progress(len(mine), f"generate {name}", initial=len(done), enabled=g.progress) as bar:
        failed, stopped = _generate(gen, g, todo, log_, bar, n)
        if failed and not stopped:  # once more, after the rest: a short outage may be over
            failed, _ = _generate(gen, g, [p for p in todo if p["problem_id"] in failed], log_, bar, n)
    if failed:
        first = next(iter(failed.items()))
        raise RuntimeError(
            f"generate {name}: {len(failed)} of {len(mine)} problems failed; first: {first[0]}: {first[1]}. "
            f"The problems that finished are kept in {log_.path}: rerun to generate only the missing ones"
        )
    out = Manifest(
        stage=STAGE,
        key=key,
        config={"shard": shard, "num_shards": g.num_shards},
        outputs={"samples": {"path": str(log_.path), "rows": len(mine) * n}},
        metrics={
            "problems": len(mine),
            "resumed_problems": len(done),
            "dropped_torn_bytes": log_.dropped_bytes,
            **_counts_delta(gen.endpoint_counts(), before),
        },
    )
    out.write(parts, f"{name}.manifest.json")
    return out


def _generate(
    gen: Sampler, g: DictConfig, todo: list[dict], log_: AppendLog, bar, n: int
) -> tuple[dict[str, str], bool]:
    """Generates `todo` into the shard log chunk by chunk: (failed problem id -> why, stopped early).

    A problem whose requests gave up is left out while the rest of its chunk is kept, so a rerun generates
    only it. Stops when the endpoint refuses everything (a fatal answer, or STOP_AFTER_FAILED problems in a
    row with nothing finished); the problems not attempted then count as failed, with that reason."""
    failed: dict[str, str] = {}
    in_a_row = 0
    for i in range(0, len(todo), g.chunk_problems):
        stop = None
        try:
            rows = gen.run_chunk(todo[i : i + g.chunk_problems])
            in_a_row = 0
        except ChunkFailed as e:
            rows, in_a_row = e.rows, 0 if e.rows else in_a_row + len(e.failed)
            failed.update(e.failed)
            if e.fatal or in_a_row >= STOP_AFTER_FAILED:
                stop = e.fatal or f"the {in_a_row} problems before failed and none finished"
        log_.append(rows)
        bar.update(len(rows) // n)
        s = gen.stats
        bar.set_postfix(
            samples_s=f"{s['samples'] / max(s['generate_s'], 1e-9):.1f}",
            tok_s=f"{s['completion_tokens'] / max(s['generate_s'], 1e-9):.0f}",
        )
        if stop:
            failed |= {p["problem_id"]: f"not attempted: {stop}" for p in todo[i + g.chunk_problems :]}
            return failed, True
    return failed, False


def _counts_delta(now: dict[str, int], before: dict[str, int]) -> dict:
    """A shard's retries and give-ups (this run's, while it generated), totals plus per cause."""
    d = {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
    return {
        "retries": d.pop("retries", 0),
        "give_ups": d.pop("give_ups", 0),
        "retries_by_cause": {k.split(".", 1)[1]: v for k, v in sorted(d.items()) if k.startswith("retries.")},
        "give_ups_by_cause": {
            k.split(".", 1)[1]: v for k, v in sorted(d.items()) if k.startswith("give_ups.")
        },
    }


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
        if not _repair_shard(parts, name, shard_of(problems, shard, g.num_shards), samples_per_problem(g)):
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


def _endpoint_metrics(shard_ms: list[Manifest]) -> dict:
    """Retries and give-ups summed over the shards (each counted by the run that finished it, in whichever
    process: local workers and Slurm array tasks write their own shard manifests)."""
    out: dict = {"retries": 0, "give_ups": 0, "retries_by_cause": Counter(), "give_ups_by_cause": Counter()}
    for m in shard_ms:
        for k, v in out.items():
            out[k] = v + (Counter(m.metrics.get(k) or {}) if isinstance(v, Counter) else m.metrics.get(k, 0))
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in out.items()}


def _metrics(rows: list[dict], stats: dict, shard_ms: list[Manifest]) -> dict:
    gen_s = max(stats.get("generate_s", 0.0), 1e-9)
    ctoks = [r["completion_tokens"] for r in rows]
    return {
        "rows": len(rows),
        "problems": len({r["problem_id"] for r in rows}),
        "mean_completion_tokens": sum(ctoks) / max(len(ctoks), 1),
        "truncated_rate": sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1),
        # closed reasoning: both a reasoning and an answer parsed in the teacher's format
        "think_closed_rate": sum(r["reasoning"] is not None and r["response"] is not None for r in rows)
        / max(len(rows), 1),
        "format_problems": _counts(r.get("format_problem") for r in rows if r.get("format_problem")),
        "reasoning_formats": _counts(r.get("reasoning_format") for r in rows),
        "samples_per_s": stats.get("samples", 0) / gen_s if stats.get("samples") else None,
        "tokens_per_s": stats.get("completion_tokens", 0) / gen_s if stats.get("samples") else None,
        "generated_samples_this_run": int(stats.get("samples", 0)),
        **_endpoint_metrics(shard_ms),
    }


def _counts(values) -> dict[str, int]:  # noqa: ANN001 (an iterable of labels)
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


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
    samplings = pass_samplings(g.sampling, g.passes)
    gen = Sampler(g.engine, cfg.teacher, paths, g.prompt_template, g.system_prompt, samplings)
    try:
        shards = [g.shard] if g.shard is not None else range(g.num_shards)
        shard_ms = [_locked_shard(gen, g, problems, s, out_dir, key) for s in shards]
    finally:
        gen.close()
    if g.shard is not None:
        return shard_ms[0]
    rows = _merge(problems, parts, g.num_shards, samples_per_problem(g), out_dir / "samples.jsonl")
    m = Manifest(
        stage=STAGE,
        key=key,
        config=OmegaConf.to_container(cfg.stage, resolve=True),
        inputs=inputs,
        outputs={"samples": {"path": str(out_dir / "samples.jsonl"), "rows": len(rows)}},
        metrics=_metrics(rows, gen.stats, shard_ms),
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
