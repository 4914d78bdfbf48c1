"""The curate stage: teacher samples in, curriculum phases of verified, deduplicated, clean pairs out.

Every input row ends in exactly one place: a phase shard (kept) or a rejected shard with the first reason
that dropped it, in the funnel's order (text checks, answer extraction, length and repetition filters,
problem dedup, decontamination, verdict, per-problem selection, phase rules). It runs in two passes so
that memory does not grow with the samples: the problem pass (`curate.problem_pass`) reads problem texts
only, for dedup and decontamination; the sample pass (`curate.sample_pass`, `curate.parts`) streams the
samples of each unit (a generate shard) in chunks of whole problems. Units run in this process, in
`workers` local processes, or in a Slurm array (`cluster=slurm`, `num_shards` tasks); the merge lists
their shards and sums their funnel counts.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_json
from distill.core.manifest import Manifest, finished, stage_key, up_to_date
from distill.core.paths import Paths
from distill.core.problems import source_fingerprint
from distill.core.report import progress, summary_table
from distill.core.shards import dataset_files
from distill.core.tracking import log_stage_outputs
from distill.core.workers import run_workers
from distill.curate.external import ExternalConfig
from distill.curate.funnel import funnel, plot_funnel, summary_rows
from distill.curate.inputs import Units, input_record
from distill.curate.labels import JudgeConfig, PseudoLabelConfig
from distill.curate.lengths import LengthConfig
from distill.curate.parts import merge, run_unit, sweep_other_keys, unit_name
from distill.curate.phases import PhaseRule
from distill.curate.problem_pass import EvalSet, eval_sources, run_problem_pass
from distill.curate.sample_pass import PassContext, Tally, phase_names
from distill.engines.chat import DEFAULT_PROMPT

log = logging.getLogger(__name__)
STAGE = "curate"


@dataclass
class ColumnMap:
    """Columns of an external trace file, by sample field; all null: the file is in the generate schema."""

    messages: str | None = None  # chat rows: last user turn -> prompt, last assistant turn -> completion
    problem_id: str | None = None
    problem: str | None = None
    answer: str | None = None
    prompt: str | None = None
    completion: str | None = None
    sample_idx: str | None = None
    finish_reason: str | None = None
    prompt_tokens: str | None = None
    completion_tokens: str | None = None
    teacher: str | None = None
    meta: str | None = None


@dataclass
class AnswerConfig:
    extractors: list[str] = field(
        default_factory=lambda: ["boxed"]
    )  # tried in order: boxed|answer_is|last_number
    require_think: bool = True  # a missing or broken think block is a rejection of its own
    boxed: str = "joined"  # joined: boxes joined by , ; and/or are one answer | last: the last box only
    box_prose: str = "find"  # find: the answer inside a box's words | whole: a box of words is no answer


@dataclass
class VerifyConfig:
    num_workers: int | None = None  # None: all cores; 0: in this process (must be its main thread)
    start_method: str = "fork"
    parse_timeout_s: int = 5
    verify_timeout_s: int = 5
    strict: bool = (
        True  # curate/strict.py's rules against math-verify's false accepts; false: plain math-verify
    )
    keep_unverified: bool = False  # `null` verdicts are dropped as `unverified`, never counted as wrong
    keep_wrong: bool = False  # the "unverified data" ablation: train on the teacher's wrong answers too
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class FilterConfig:
    drop_truncated: bool = True
    min_completion_tokens: int = 1
    max_completion_tokens: int | None = None
    repetition_ngram: int = 10  # words
    max_repetition: float | None = 0.3  # share of n-grams that repeat an earlier one; None: off


@dataclass
class DedupConfig:
    problems_exact: bool = True
    problems_near: bool = True
    near_threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 3  # words per MinHash shingle
    max_per_problem: int | None = 4  # k samples kept per problem, distinct traces first; None: all


@dataclass
class DecontamConfig:
    enabled: bool = True
    ngram: int = 8
    max_item_share: float | None = None  # ignore n-grams found in more than this share of eval items
    data_sets: list[str] = field(default_factory=lambda: ["heldout"])  # keys of the run's `data`
    eval_sets: list[EvalSet] = field(default_factory=list)  # more, by path or dataset name


@dataclass
class CurateConfig:
    name: str = "curate"
    input: str | None = None  # a trace file, or another run's generate dir, instead of this run's output
    columns: ColumnMap = field(default_factory=ColumnMap)  # for `input` files not in the generate schema
    external: ExternalConfig = field(default_factory=ExternalConfig)  # their shape (conf/input/ presets)
    prompt_template: str = DEFAULT_PROMPT  # for external rows without a prompt
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    lengths: LengthConfig = field(default_factory=LengthConfig)  # the train bound, in student tokens
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    phases: list[PhaseRule] = field(default_factory=lambda: [PhaseRule()])
    val_fraction: float = 0.0  # share of problems held out per phase as `<phase>_val`
    val_seed: int = 0
    meta_keys: list[str] = field(default_factory=lambda: ["meta.level", "meta.category"])
    progress: bool = True
    chunk_samples: int = 4096  # samples of whole problems in memory at a time in the sample pass
    workers: int = 1  # local processes for the sample pass, each taking units in turn
    shard: int | None = None  # a Slurm array task: the units u with u % num_shards == shard
    num_shards: int = 1  # array tasks (cluster=slurm); the result does not depend on it


Config = CurateConfig
NOT_IN_KEY = {"progress", "verify.num_workers", "verify.start_method", "lengths.batch", "chunk_samples",
              "workers", "shard", "num_shards"}  # fmt: skip


def _key(cfg: DictConfig, paths: Paths) -> tuple[str, list[dict]]:
    c = cfg.stage
    inputs = [input_record(c.input, paths)]
    srcs = eval_sources(cfg)
    for name, src in srcs.items():
        try:
            inputs.append({**source_fingerprint(src, paths), "name": f"eval:{name}"})
        except OSError as e:
            raise RuntimeError(f"decontamination eval set {name!r} cannot be read: {e}") from e
    keyed = {
        "stage": OmegaConf.to_container(c, resolve=True),
        "eval_sets": {k: vars(v) for k, v in srcs.items()},
    }
    if c.lengths.max_length is not None:  # lengths are measured in the student's tokenizer
        keyed["student"] = {k: cfg.student[k] for k in ("path", "tokenizer", "revision", "chat_template")}
    if c.verify.judge.enabled and c.verify.judge.model is None:
        keyed["judge_model"] = OmegaConf.to_container(cfg.teacher, resolve=True)
    if not c.verify.judge.enabled:
        keyed["stage"]["verify"].pop("judge")
    return stage_key(keyed, [i["key"] for i in inputs], NOT_IN_KEY), inputs


def _funnel(tally: Tally, cfg: DictConfig, pp: dict) -> dict:
    v = tally.verdicts
    extra = {
        "problems": {"input": tally.problems_in, "kept": tally.problems_kept},
        "verdicts": {k: v.get(k, 0) for k in ("true", "false", "none")},
        "verdict_sources": dict(tally.sources),
        **tally.fixed,
        **{k: n for k, n in tally.stats.items() if not k.endswith("_s")},
        **pp["extra"],
    }
    phases = {n: tally.phases.get(n, 0) for n in phase_names(cfg.stage)}
    return funnel(tally.input, tally.reasons, phases, extra)


def _sample_pass(units: Units, cfg: DictConfig, paths: Paths, pp: dict, parts, key: str) -> None:
    """This process's units (an array task's share, or all), after local workers took theirs if any."""
    c = cfg.stage
    mine = [u for u in range(len(units)) if c.shard is None or u % c.num_shards == c.shard]
    todo = [u for u in mine if not finished(parts, key, f"{unit_name(u)}.manifest.json")]
    if c.shard is None and c.workers > 1 and len(todo) > 1:
        w = min(c.workers, len(todo))
        worker_cfg = cfg.copy()
        worker_cfg.force, worker_cfg.stage.workers, worker_cfg.stage.num_shards = False, 1, w
        if c.verify.num_workers is None:  # the node's cores shared out between the workers
            worker_cfg.stage.verify.num_workers = max(1, (os.cpu_count() or 1) // w)
        run_workers(worker_cfg, paths, paths.stage_dir(STAGE), list(range(w)), w)
        todo = []
    total = units.record.get("rows") if not c.input else None
    ctx = PassContext(cfg, paths)
    try:
        with progress(total, "curate: samples", enabled=c.progress, unit="sample") as bar:
            for u in todo:
                run_unit(units, u, cfg, paths, ctx, pp, parts, key, bar)
    finally:
        ctx.close()


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    c = cfg.stage
    t_start = time.perf_counter()
    out_dir = paths.stage_dir(STAGE)
    key, inputs = _key(cfg, paths)
    if c.shard is None and (m := up_to_date(out_dir, key, cfg.force, "curate")):
        return m
    parts = out_dir / "parts" / key
    if cfg.force and c.shard is None:
        shutil.rmtree(parts, ignore_errors=True)
    elif cfg.force:  # a forced array task redoes its own units
        for f in parts.glob("unit-*.manifest.json"):
            if int(f.name[5:10]) % c.num_shards == c.shard:
                f.unlink()
    columns = {k: v for k, v in OmegaConf.to_container(c.columns).items() if v is not None}
    external = bool(c.input) and not paths.resolve(c.input).is_dir()  # a dir is another run's generate
    units = Units(inputs[0], external, columns, c.prompt_template, OmegaConf.to_object(c.external))
    pp = run_problem_pass(units, cfg, paths, parts / "problems.json")
    _sample_pass(units, cfg, paths, pp, parts, key)
    if c.shard is not None:  # an array task: the merge job writes the stage's manifest
        return Manifest(stage=STAGE, key=key, config={"shard": c.shard, "num_shards": c.num_shards})
    outputs, tally = merge(len(units), cfg, parts, key)
    fun = _funnel(tally, cfg, pp)
    atomic_write_json(out_dir / "funnel.json", fun)
    plot_funnel(fun, out_dir / "funnel.png")
    outputs["funnel"] = {"path": str(out_dir / "funnel.json")}
    outputs["funnel_plot"] = {"path": str(out_dir / "funnel.png")}
    timings = {"verify_s": tally.stats.get("verify_s", 0.0), "total_s": time.perf_counter() - t_start}
    m = Manifest(
        stage=STAGE,
        key=key,
        config=OmegaConf.to_container(cfg.stage, resolve=True),
        inputs=inputs,
        outputs=outputs,
        metrics=fun,
        timings=timings,
    )
    m.write(out_dir)
    sweep_other_keys(out_dir, key)
    files = {f"{n}/{p.name}": p for n, o in outputs.items() if o.get("format") for p in dataset_files(o)}
    log_stage_outputs(cfg, paths, m, "dataset", files | {"funnel.json": out_dir / "funnel.json"})
    summary_table("curate funnel", summary_rows(fun) | timings)
    return m
