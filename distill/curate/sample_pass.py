"""Curate's sample pass: the samples of a chunk of whole problems through every row-level step.

A chunk holds every sample of its problems and nothing else, so the per-problem steps (pass rate,
pseudo-labels, max per problem, the phase rules) see exactly what they would see with all rows in
memory, and memory is bounded by the chunk. Verdicts are computed for every answered sample, filtered or
not, so pass rates measure the teacher, not the filters. What must live across chunks (the student's
tokenizer, the verifier's worker pool, a judge engine) is made once per pass (`PassContext`); the funnel's
counts are summed over chunks (`Tally`), then over units and array tasks by the merge.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.core.paths import Paths
from distill.curate.dedup import group_by, select_samples
from distill.curate.filters import row_filters
from distill.curate.labels import judge_rows, pseudo_references
from distill.curate.lengths import reject_over_length
from distill.curate.phases import is_val, matches, train_pair
from distill.curate.verify import Timeouts, Verifier

SUMMED = ("verify_s", "distinct_pairs", "unparseable_reference_problems", "missing_reference_problems",
          "pseudo_labelled_problems", "judge_asked", "judge_decided", "over_max_length")  # fmt: skip


class PassContext:
    """What a sample pass makes once and reuses for every chunk: the verifier (its worker pool, forked and
    warmed once, not per chunk: a chunk is seconds of work, a pool's start a large share of that) and the
    judge's engine (a model load)."""

    def __init__(self, cfg: DictConfig, paths: Paths):
        self.cfg, self.paths, self._engine = cfg, paths, None
        self.verifier = verifier(cfg.stage.verify, keep_pool=True)

    def judge_engine(self) -> Any:
        if self._engine is None:
            from distill.engines import make_engine

            j, teacher = self.cfg.stage.verify.judge, self.cfg.teacher
            model = OmegaConf.to_object(j.model if j.model is not None else teacher)
            self._engine = make_engine(OmegaConf.to_object(j.engine), model, self.paths)
        return self._engine

    def close(self) -> None:
        self.verifier.close()
        if self._engine is not None:
            self._engine.close()


def verifier(v: DictConfig, keep_pool: bool = False) -> Verifier:
    t = Timeouts(v.parse_timeout_s, v.verify_timeout_s)
    return Verifier(v.num_workers, t, v.start_method, strict=v.strict, keep_pool=keep_pool)


def verify(rows: list[dict], c: DictConfig, stats: dict, ctx: PassContext, bar: Any = None) -> None:
    ver = ctx.verifier
    t0 = time.perf_counter()
    verdicts = ver.verdicts([(r["answer"], r["extracted_answer"]) for r in rows], bar.update if bar else None)
    for r, vd in zip(rows, verdicts, strict=True):
        r["verdict"] = vd
        r["verdict_source"] = "math_verify" if vd is not None else None
        r["reference_used"] = r["answer"]
        r["ref_unparsed"] = r["answer"] is not None and r["answer"] in ver.unparsed_references
    stats["verify_s"] = time.perf_counter() - t0
    stats["distinct_pairs"] = ver.distinct_pairs
    stats["unparseable_reference_problems"] = len({r["problem_id"] for r in rows if r["ref_unparsed"]})
    stats["missing_reference_problems"] = len({r["problem_id"] for r in rows if r["answer"] is None})
    if c.verify.pseudo_label.enabled:
        _pseudo_label(rows, c, stats, ver)
    if c.verify.judge.enabled:
        _judge(rows, c, stats, ctx)


def _pseudo_label(rows: list[dict], c: DictConfig, stats: dict, ver: Verifier) -> None:
    refs = pseudo_references(rows, OmegaConf.to_object(c.verify.pseudo_label))
    todo = [r for r in rows if r["problem_id"] in refs]
    verdicts = ver.verdicts([(refs[r["problem_id"]], r["extracted_answer"]) for r in todo])
    for r, vd in zip(todo, verdicts, strict=True):
        r["reference_used"], r["verdict"] = refs[r["problem_id"]], vd
        r["verdict_source"] = "pseudo_label" if vd is not None else None
    stats["pseudo_labelled_problems"] = len(refs)


def _judge(rows: list[dict], c: DictConfig, stats: dict, ctx: PassContext) -> None:
    j = c.verify.judge
    want = {"null": None, "false": False, "true": True}
    recheck = [want[k] for k in j.recheck]
    todo = [
        r
        for r in rows
        if r["verdict"] in recheck and r["extracted_answer"] is not None and r["reference_used"] is not None
    ]
    stats["judge_asked"], stats["judge_decided"] = len(todo), 0
    if todo:
        stats["judge_decided"] = judge_rows(todo, OmegaConf.to_object(j), ctx.judge_engine())


def pass_rates(rows: list[dict]) -> None:
    for rs in group_by(rows, "problem_id").values():
        vs = [r["verdict"] for r in rs if r["verdict"] is not None]
        rate = sum(vs) / len(vs) if vs else None
        for r in rs:
            r["pass_rate"] = rate


def assign(rows: list[dict], c: DictConfig, prob: dict[str, dict]) -> None:
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


def phase_names(c: DictConfig) -> list[str]:
    names = [p.name for p in c.phases]
    if len(set(names)) != len(names):
        raise ValueError(f"curate phases need distinct names, got {names}")
    return names + ([f"{n}_val" for n in names] if c.val_fraction > 0 else [])


def phases(rows: list[dict], c: DictConfig) -> dict[str, list[dict]]:
    rules = [OmegaConf.to_object(p) for p in c.phases]
    out: dict[str, list[dict]] = {n: [] for n in phase_names(c)}
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


def process_chunk(
    rows: list[dict],
    cfg: DictConfig,
    paths: Paths,
    ctx: PassContext,
    reasons: dict[str, dict],
    bar: Any = None,
) -> tuple[dict[str, list[dict]], dict]:
    """Every step for the samples of whole problems: (phase name -> pairs, this chunk's stats)."""
    c = cfg.stage
    stats: dict = {}
    for r in rows:
        r["extracted_answer"] = r["answer_method"] = None
        r["reject_reason"], r["reject_detail"] = row_filters(r, c)
    stats.update(reject_over_length(rows, cfg, paths))
    verify(rows, c, stats, ctx, bar)
    pass_rates(rows)
    assign(rows, c, reasons)
    return phases(rows, c), stats


class Tally:
    """The funnel's counts, summed over chunks, units and tasks (JSON in each unit's manifest)."""

    def __init__(self, data: dict | None = None):
        d = data or {}
        self.input = d.get("input", 0)
        self.reasons = Counter(d.get("reasons", {}))
        self.phases = Counter(d.get("phases", {}))
        self.verdicts = Counter(d.get("verdicts", {}))
        self.sources = Counter(d.get("verdict_sources", {}))
        self.stats = Counter(d.get("stats", {}))
        self.fixed = dict(d.get("fixed", {}))
        self.problems_in = d.get("problems_in", 0)
        self.problems_kept = d.get("problems_kept", 0)

    def add_chunk(self, rows: list[dict], pairs: dict[str, list[dict]], stats: dict) -> None:
        self.input += len(rows)
        self.reasons.update(r["reject_reason"] for r in rows if r["reject_reason"] is not None)
        self.phases.update({k: len(v) for k, v in pairs.items()})
        self.verdicts.update(str(r["verdict"]).lower() for r in rows)
        self.sources.update(str(r["verdict_source"]) for r in rows)
        self.stats.update({k: v for k, v in stats.items() if k in SUMMED})
        self.fixed.update({k: v for k, v in stats.items() if k not in SUMMED})
        self.problems_in += len({r["problem_id"] for r in rows})
        self.problems_kept += len({r["problem_id"] for r in rows if r["reject_reason"] is None})

    def __iadd__(self, other: Tally) -> Tally:
        self.input += other.input
        for mine, theirs in ((self.reasons, other.reasons), (self.phases, other.phases),
                             (self.verdicts, other.verdicts), (self.sources, other.sources),
                             (self.stats, other.stats)):  # fmt: skip
            mine.update(theirs)
        self.fixed.update(other.fixed)
        self.problems_in += other.problems_in
        self.problems_kept += other.problems_kept
        return self

    def to_json(self) -> dict:
        return {
            "input": self.input, "reasons": dict(self.reasons), "phases": dict(self.phases),
            "verdicts": dict(self.verdicts), "verdict_sources": dict(self.sources), "stats": dict(self.stats),
            "fixed": self.fixed, "problems_in": self.problems_in, "problems_kept": self.problems_kept,
        }  # fmt: skip
