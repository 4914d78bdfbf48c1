"""The generate stage: n teacher samples per problem, sharded, resumable after SIGKILL.

Work is split into shards (round-robin over problems). Each shard appends finished problems to its own
log in flushed chunks; a restart drops a torn last line and any problem with fewer than n samples, then
generates only what is missing. Samples are seeded per problem, so a resumed or sharded run writes the
same rows as an uninterrupted one. A finished shard becomes one Parquet file, rows in problem order
(`distill.generate.shard_log`, which never holds a trace in memory), and its log is deleted: the shards,
listed in the stage's manifest, are the dataset (no merged copy). Local shard workers (`workers > 1`) are separate processes, started by `distill.generate.shards`.

A shard is worked on only under its lock (`<run>/generate/.lock.<shard>`: an array task holds its own, the
whole-stage driver takes each in turn). Rows written twice (a crash between a chunk's append and its
bookkeeping, two writers before locks existed) are dropped when the shard is written, missing ones are
generated again, and a finished shard that no longer matches its manifest is made again, so no state
on disk makes every rerun fail. A shard with no problems (more shards than problems) is empty.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.core.io import AppendLog
from distill.core.lock import RunLock, lock_path
from distill.core.manifest import (
    Manifest,
    finished,
    model_fingerprint,
    output_mismatches,
    stage_key,
    up_to_date,
)
from distill.core.paths import Paths
from distill.core.problems import data_source, load_problems, shard_of, source_fingerprint
from distill.core.report import progress, summary_table
from distill.core.schemas import SAMPLE, RowError
from distill.core.shards import dataset_files, dataset_record, iter_dataset
from distill.core.tracking import log_stage_outputs
from distill.engines.sampler import ChunkFailed, Sampler, SamplerConfig
from distill.generate import shard_log
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


def _complete_rows(log_: AppendLog, pids: list[str], n: int) -> tuple[set[str], int]:
    """Problems that have exactly samples 0..n-1 in the log (the rest is dropped and regenerated), and how
    many rows were duplicates. Only ids and byte ranges are read (distill.generate.shard_log), never a trace."""
    index, seen = shard_log.scan(log_.path)
    done = shard_log.complete(index, pids, n)
    shard_log.keep_only(log_.path, index, seen, done, n)
    return done, seen - len(index)


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


def _run_shard(
    gen: Sampler, g: DictConfig, problems: list[dict], shard: int, parts: Path, key: str
) -> Manifest:
    name = shard_name(shard, g.num_shards)
    log_path = parts / f"{name}.jsonl"
    if m := finished(parts, key, f"{name}.manifest.json"):
        log_path.unlink(
            missing_ok=True
        )  # killed after the manifest, before the log went: the shard is the data
        return m
    mine = shard_of(problems, shard, g.num_shards)
    pids = [p["problem_id"] for p in mine]
    log_ = AppendLog(log_path, SAMPLE)
    log_.path.touch()  # an empty shard (more shards than problems) has an empty log, not none
    n = samples_per_problem(g)
    done, duplicated = _complete_rows(log_, pids, n)
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
    got = shard_log.finalize(log_.path, parts / f"{name}.parquet", pids, n)
    if got is None:
        raise RuntimeError(
            f"{log_.path}: rows went missing while {name} was written; rerun to regenerate them"
        )
    rec, dropped = got
    dropped += duplicated
    if dropped:
        log.warning("%s: dropped %d duplicated or foreign rows", log_.path, dropped)
        print(f"[distill] generate {name}: repaired its log ({dropped} duplicated rows dropped)")
    out = Manifest(
        stage=STAGE,
        key=key,
        config={"shard": shard, "num_shards": g.num_shards},
        outputs={"samples": {"path": str(parts / rec["file"]), "rows": rec["rows"], "sha256": rec["sha256"]}},
        metrics={
            "problems": len(mine),
            "resumed_problems": len(done),
            "dropped_torn_bytes": log_.dropped_bytes,
            "repaired_duplicate_rows": dropped,
            **_counts_delta(gen.endpoint_counts(), before),
        },
    )
    out.write(parts, f"{name}.manifest.json")
    log_.path.unlink()  # the Parquet shard is the data: the disk holds it once
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
    for f in (parts / f"{name}.jsonl", parts / f"{name}.parquet", parts / f"{name}.manifest.json"):
        f.unlink(missing_ok=True)


def _locked_shard(
    gen: Sampler, g: DictConfig, problems: list[dict], shard: int, out_dir: Path, key: str
) -> Manifest:
    """One shard under its lock (unless this process is the array task holding it already), temp files of
    its killed writes swept first; a finished shard whose file is not what its manifest says is made again."""
    parts, name = out_dir / "parts" / key, shard_name(shard, g.num_shards)
    held = g.shard is not None  # an array task / worker: distill.pipeline.run_locked took this lock
    with nullcontext() if held else RunLock(lock_path(out_dir, name), f"generate ({name})"):
        for f in parts.glob(f".{name}.*.tmp"):
            f.unlink(missing_ok=True)
        m = _run_shard(gen, g, problems, shard, parts, key)
        if bad := output_mismatches(m.outputs["samples"]):
            print(
                f"[distill] generate {name}: its shard changed after it was written ({'; '.join(bad)}): redone"
            )
            (parts / f"{name}.manifest.json").unlink(missing_ok=True)
            m = _run_shard(gen, g, problems, shard, parts, key)
    return m


def _dataset(problems: list[dict], parts: Path, shard_ms: list[Manifest], n: int) -> dict:
    """The stage's output: the finished shards, in shard order (problem i is in shard i % num_shards)."""
    shards = [
        {
            "file": Path(m.outputs["samples"]["path"]).name,
            **{k: m.outputs["samples"][k] for k in ("rows", "sha256")},
        }
        for m in shard_ms
    ]
    rec = dataset_record(parts, shards) | {"problem_order": "round_robin"}
    if rec["rows"] != len(problems) * n:
        raise RowError(f"{parts}: shards hold {rec['rows']} rows, expected {len(problems) * n}")
    return rec


def _endpoint_metrics(shard_ms: list[Manifest]) -> dict:
    """Retries and give-ups summed over the shards (each counted by the run that finished it, in whichever
    process: local workers and Slurm array tasks write their own shard manifests)."""
    out: dict = {"retries": 0, "give_ups": 0, "retries_by_cause": Counter(), "give_ups_by_cause": Counter()}
    for m in shard_ms:
        for k, v in out.items():
            out[k] = v + (Counter(m.metrics.get(k) or {}) if isinstance(v, Counter) else m.metrics.get(k, 0))
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in out.items()}


METRIC_COLUMNS = ["problem_id", "completion_tokens", "finish_reason", "reasoning", "response",
                  "format_problem", "reasoning_format"]  # fmt: skip


def _metrics(rec: dict, stats: dict, shard_ms: list[Manifest]) -> dict:
    gen_s = max(stats.get("generate_s", 0.0), 1e-9)
    rows = tokens = truncated = closed = 0
    pids: set[str] = set()
    problems: Counter = Counter()
    formats: Counter = Counter()
    for r in iter_dataset(rec, columns=METRIC_COLUMNS):  # streamed: the texts are never all in memory
        rows, tokens = rows + 1, tokens + r["completion_tokens"]
        truncated += r["finish_reason"] == "length"
        # closed reasoning: both a reasoning and an answer parsed in the teacher's format
        closed += r["reasoning"] is not None and r["response"] is not None
        pids.add(r["problem_id"])
        problems.update([str(r["format_problem"])] if r.get("format_problem") else [])
        formats[str(r.get("reasoning_format"))] += 1
    return {
        "rows": rows,
        "problems": len(pids),
        "mean_completion_tokens": tokens / max(rows, 1),
        "truncated_rate": truncated / max(rows, 1),
        "think_closed_rate": closed / max(rows, 1),
        "format_problems": dict(problems),
        "reasoning_formats": dict(formats),
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
    rec = _dataset(problems, parts, shard_ms, samples_per_problem(g))
    m = Manifest(
        stage=STAGE,
        key=key,
        config=OmegaConf.to_container(cfg.stage, resolve=True),
        inputs=inputs,
        outputs={"samples": rec},
        metrics=_metrics(rec, gen.stats, shard_ms),
        timings={
            "engine_init_s": gen.stats.get("engine_init_s", 0.0),
            "generate_s": gen.stats.get("generate_s", 0.0),
            "total_s": time.perf_counter() - t_start,
        },
    )
    m.write(out_dir)
    log_stage_outputs(cfg, paths, m, "dataset", {p.name: p for p in dataset_files(rec)})
    summary_table("generate", m.metrics | m.timings)
    return m
