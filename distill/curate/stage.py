"""The curate stage: teacher samples in, curriculum phases of verified, deduplicated, clean pairs out.

Every input row ends in exactly one place: a phase file (kept) or `rejected.jsonl` with the first reason
that dropped it, in the funnel's order (text checks, answer extraction, length and repetition filters,
problem dedup, decontamination, verdict, per-problem selection, phase rules). Verdicts are computed for
every answered sample, filtered or not, so pass rates measure the teacher, not the filters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from distill.core.config import ProblemSource
from distill.core.io import atomic_write_json, write_rows
from distill.core.manifest import Manifest, stage_key, up_to_date
from distill.core.paths import Paths
from distill.core.problems import data_source, source_fingerprint
from distill.core.report import progress, summary_table
from distill.core.schemas import REJECTED, TRAIN_PAIR
from distill.core.tracking import log_stage_outputs
from distill.curate.dedup import dedup_problems, group_by, select_samples
from distill.curate.external import ExternalConfig
from distill.curate.filters import row_filters
from distill.curate.funnel import count_values, funnel, plot_funnel, summary_rows
from distill.curate.inputs import input_record, load_samples
from distill.curate.labels import JudgeConfig, PseudoLabelConfig, judge_rows, pseudo_references
from distill.curate.lengths import LengthConfig, reject_over_length
from distill.curate.phases import PhaseRule, is_val, matches, train_pair
from distill.curate.verify import Timeouts, Verifier
from distill.engines.chat import DEFAULT_PROMPT

log = logging.getLogger(__name__)
STAGE = "curate"


@dataclass
class EvalSet(ProblemSource):
    """A named decontamination eval set (a list entry: lists, unlike dicts, merge across config layers)."""

    name: str = "eval"


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
    input: str | None = None  # an external trace file instead of this run's generate output
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


Config = CurateConfig
NOT_IN_KEY = {"progress", "verify.num_workers", "verify.start_method", "lengths.batch"}


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


def eval_sources(cfg: DictConfig) -> dict[str, ProblemSource]:
    """The decontamination eval sets: named keys of the run's `data`, then the stage's own entries."""
    d = cfg.stage.decontam
    if not d.enabled:
        return {}
    out = {}
    for k in d.data_sets:
        out[k] = OmegaConf.to_object(data_source(cfg, k, "curate.decontam.data_sets"))
    for e in d.eval_sets:
        src = OmegaConf.to_container(e, resolve=True)
        name = src.pop("name")
        if name in out:
            raise ValueError(f"curate.decontam: two eval sets named {name!r}")
        out[name] = ProblemSource(**src)
    return out


def _verifier(v: DictConfig) -> Verifier:
    t = Timeouts(v.parse_timeout_s, v.verify_timeout_s)
    return Verifier(v.num_workers, t, v.start_method, strict=v.strict)


def _verify(rows: list[dict], c: DictConfig, stats: dict, paths: Paths, teacher: DictConfig) -> None:
    verifier = _verifier(c.verify)
    v = c.verify
    t0 = time.perf_counter()
    with progress(len(rows), "curate: verify", enabled=c.progress, unit="sample") as bar:
        verdicts = verifier.verdicts([(r["answer"], r["extracted_answer"]) for r in rows], bar.update)
        bar.set_postfix(correct=sum(v is True for v in verdicts), wrong=sum(v is False for v in verdicts))
    for r, vd in zip(rows, verdicts, strict=True):
        r["verdict"] = vd
        r["verdict_source"] = "math_verify" if vd is not None else None
        r["reference_used"] = r["answer"]
        r["ref_unparsed"] = r["answer"] is not None and r["answer"] in verifier.unparsed_references
    stats["verify_s"] = time.perf_counter() - t0
    stats["distinct_pairs"] = verifier.distinct_pairs
    stats["unparseable_reference_problems"] = len({r["problem_id"] for r in rows if r["ref_unparsed"]})
    stats["missing_reference_problems"] = len({r["problem_id"] for r in rows if r["answer"] is None})
    if v.pseudo_label.enabled:
        _pseudo_label(rows, c, stats)
    if v.judge.enabled:
        _judge(rows, c, stats, paths, teacher)


def _pseudo_label(rows: list[dict], c: DictConfig, stats: dict) -> None:
    refs = pseudo_references(rows, OmegaConf.to_object(c.verify.pseudo_label))
    todo = [r for r in rows if r["problem_id"] in refs]
    verdicts = _verifier(c.verify).verdicts([(refs[r["problem_id"]], r["extracted_answer"]) for r in todo])
    for r, vd in zip(todo, verdicts, strict=True):
        r["reference_used"], r["verdict"] = refs[r["problem_id"]], vd
        r["verdict_source"] = "pseudo_label" if vd is not None else None
    stats["pseudo_labelled_problems"] = len(refs)


def _judge(rows: list[dict], c: DictConfig, stats: dict, paths: Paths, teacher: DictConfig) -> None:
    from distill.engines import make_engine

    j = c.verify.judge
    want = {"null": None, "false": False, "true": True}
    recheck = [want[k] for k in j.recheck]
    todo = [
        r
        for r in rows
        if r["verdict"] in recheck and r["extracted_answer"] is not None and r["reference_used"] is not None
    ]
    stats["judge_asked"], stats["judge_decided"] = len(todo), 0
    if not todo:
        return
    model = OmegaConf.to_object(j.model if j.model is not None else teacher)
    engine = make_engine(OmegaConf.to_object(j.engine), model, paths)
    try:
        stats["judge_decided"] = judge_rows(todo, OmegaConf.to_object(j), engine)
    finally:
        engine.close()


def _pass_rates(rows: list[dict]) -> None:
    for rs in group_by(rows, "problem_id").values():
        vs = [r["verdict"] for r in rs if r["verdict"] is not None]
        rate = sum(vs) / len(vs) if vs else None
        for r in rs:
            r["pass_rate"] = rate


def _problem_reasons(rows: list[dict], cfg: DictConfig, paths: Paths, extra: dict) -> dict[str, dict]:
    """problem id -> {"reason", ...} for duplicate and contaminated problems."""
    from distill.curate.decontam import build_index, contaminated, load_eval_sets

    c = cfg.stage
    problems = list({r["problem_id"]: r["problem"] for r in rows}.items())
    d = c.dedup
    out = dedup_problems(problems, d.problems_exact, d.problems_near, d.near_threshold, d.num_perm, d.shingle)
    extra["contaminated_problems"] = []
    if srcs := eval_sources(cfg):
        sets, _ = load_eval_sets(srcs, paths)
        index = build_index(sets, c.decontam.ngram, c.decontam.max_item_share)
        extra["decontam"] = {"eval_items": index.items, "ignored_boilerplate_ngrams": index.ignored_grams}
        for pid, hit in contaminated([p for p in problems if p[0] not in out], index).items():
            out[pid] = {"reason": "contaminated", **hit}
            extra["contaminated_problems"].append({"problem_id": pid, **hit})
    return out


def _assign(rows: list[dict], c: DictConfig, prob: dict[str, dict]) -> None:
    """Sets `reject_reason` on every row that a problem-level, verdict or selection step drops."""
    for r in rows:
        if r["reject_reason"] is None and (p := prob.get(r["problem_id"])):
            r["reject_reason"] = p["reason"]
            r["reject_detail"] = str(p.get("duplicate_of") or f"{p.get('eval_set')}:{p.get('eval_id')}")
        elif r["reject_reason"] is None and r["verdict"] is None and not c.verify.keep_unverified:
            r["reject_reason"], r["reject_detail"] = (
                "unverified",
                "no verdict (reference or answer unparseable)",
            )
        elif r["reject_reason"] is None and r["verdict"] is False and not c.verify.keep_wrong:
            r["reject_reason"], r["reject_detail"] = (
                "wrong",
                f"{r['extracted_answer']} vs {r['reference_used']}",
            )
    alive = [r for r in rows if r["reject_reason"] is None]
    for rs in group_by(alive, "problem_id").values():
        dropped = select_samples(rs, c.dedup.max_per_problem)
        for r in rs:
            if reason := dropped.get(r["sample_idx"]):
                r["reject_reason"], r["reject_detail"] = reason, None


def _phases(rows: list[dict], c: DictConfig) -> dict[str, list[dict]]:
    rules = [OmegaConf.to_object(p) for p in c.phases]
    names = [p.name for p in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"curate phases need distinct names, got {names}")
    out: dict[str, list[dict]] = {n: [] for n in names}
    if c.val_fraction > 0:
        out.update({f"{n}_val": [] for n in names})
    for r in rows:
        if r["reject_reason"] is not None:
            continue
        hit = [p.name for p in rules if matches(p, r)]
        if not hit:
            r["reject_reason"], r["reject_detail"] = "no_phase", "no phase rule matched"
        suffix = "_val" if is_val(r["problem_id"], c.val_fraction, c.val_seed) else ""
        for name in hit:
            out[name + suffix].append(train_pair(r, name, list(c.meta_keys)))
    return out


def _write(out_dir, rows, phases, fun, inputs, key, cfg, timings) -> Manifest:
    outputs = {}
    for name, pairs in phases.items():
        path = out_dir / f"{name}.jsonl"
        outputs[name] = {"path": str(path), "rows": write_rows(path, pairs, TRAIN_PAIR)}
    rejected = [{k: v for k, v in r.items() if k != "ref_unparsed"} for r in rows if r["reject_reason"]]
    outputs["rejected"] = {"path": str(out_dir / "rejected.jsonl"), "rows": len(rejected)}
    write_rows(out_dir / "rejected.jsonl", rejected, REJECTED)
    atomic_write_json(out_dir / "funnel.json", fun)
    plot_funnel(fun, out_dir / "funnel.png")
    outputs["funnel"] = {"path": str(out_dir / "funnel.json")}
    outputs["funnel_plot"] = {"path": str(out_dir / "funnel.png")}
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
    return m


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    c = cfg.stage
    t_start = time.perf_counter()
    out_dir = paths.stage_dir(STAGE)
    key, inputs = _key(cfg, paths)
    if m := up_to_date(out_dir, key, cfg.force, "curate"):
        return m
    rows = load_samples(
        inputs[0],
        bool(c.input),
        {k: v for k, v in OmegaConf.to_container(c.columns).items() if v is not None},
        c.prompt_template,
        OmegaConf.to_object(c.external),
    )
    stats: dict = {}
    with progress(len(rows), "curate: filter", enabled=c.progress, unit="sample") as bar:
        for r in rows:
            r["extracted_answer"] = r["answer_method"] = None
            r["reject_reason"], r["reject_detail"] = row_filters(r, c)
            bar.update(1)
        rejected = sum(r["reject_reason"] is not None for r in rows)
        bar.set_postfix(kept=len(rows) - rejected, rejected=rejected)
    stats.update(reject_over_length(rows, cfg, paths))
    _verify(rows, c, stats, paths, cfg.teacher)
    _pass_rates(rows)
    extra: dict = {}
    _assign(rows, c, _problem_reasons(rows, cfg, paths, extra))
    phases = _phases(rows, c)
    kept_ids = {(r["problem_id"], r["sample_idx"]) for r in rows if r["reject_reason"] is None}
    fun = funnel(
        len(rows),
        [r["reject_reason"] for r in rows],
        {k: len(v) for k, v in phases.items()},
        {
            "problems": {
                "input": len({r["problem_id"] for r in rows}),
                "kept": len({p for p, _ in kept_ids}),
            },
            "verdicts": {str(k).lower(): sum(r["verdict"] is k for r in rows) for k in (True, False, None)},
            "verdict_sources": count_values(r["verdict_source"] for r in rows),
            **{k: v for k, v in stats.items() if not k.endswith("_s")},
            **extra,
        },
    )
    timings = {"verify_s": stats["verify_s"], "total_s": time.perf_counter() - t_start}
    m = _write(out_dir, rows, phases, fun, inputs, key, cfg, timings)
    files = {n: o["path"] for n, o in m.outputs.items() if n in phases or n in ("rejected", "funnel")}
    log_stage_outputs(cfg, paths, m, "dataset", files)
    summary_table("curate funnel", summary_rows(fun) | timings)
    return m
