"""Curate's problem pass: exact and near-duplicate problems and contamination, over problem texts only.

Dedup and decontamination decide per problem, and compare problems with each other, so they need every
problem but no sample: one streamed read of the problem column (343K problems are a few hundred MB of
text at most, whatever the traces weigh). Problems are taken in the run's problem order (generate's
shards are round-robin over problems), so the first of a duplicate pair is the one a single merged file
would have kept. The result (problem id -> why it is dropped) is written once per input key and read by
every unit of the sample pass, in whichever process or array task it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.core.config import ProblemSource
from distill.core.io import atomic_write_json
from distill.core.paths import Paths
from distill.core.problems import data_source
from distill.core.report import progress
from distill.curate.dedup import dedup_problems
from distill.curate.inputs import Units


@dataclass
class EvalSet(ProblemSource):
    """A named decontamination eval set (a list entry: lists, unlike dicts, merge across config layers)."""

    name: str = "eval"


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


def problem_order(units: Units, bar: Any = None) -> tuple[list[tuple[str, str]], list[bool]]:
    """Distinct (problem id, text) in problem order, and per unit whether its problems are contiguous."""
    per_unit, contiguous = [], []
    for u in range(len(units)):
        if bar is not None:
            bar.update(1)
        seen: dict[str, str] = {}
        last, ok = None, True
        for pid, text in units.problems(u):
            if pid != last and pid in seen:
                ok = False
            seen.setdefault(pid, text)
            last = pid
        per_unit.append(list(seen.items()))
        contiguous.append(ok)
    if units.record.get("problem_order") == "round_robin":  # problem i sits in shard i % num_shards
        width = max((len(p) for p in per_unit), default=0)
        ordered = [p[i] for i in range(width) for p in per_unit if i < len(p)]
    else:
        ordered = [x for p in per_unit for x in p]
    return ordered, contiguous


def problem_reasons(
    problems: list[tuple[str, str]], cfg: DictConfig, paths: Paths, extra: dict
) -> dict[str, dict]:
    """problem id -> {"reason", ...} for duplicate and contaminated problems."""
    from distill.curate.decontam import build_index, contaminated, load_eval_sets

    c = cfg.stage
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


def run_problem_pass(units: Units, cfg: DictConfig, paths: Paths, path: Path) -> dict:
    """Computes and writes the pass's result (or reads it when this input key already has one)."""
    import json

    if path.exists():
        return json.loads(path.read_text())
    with progress(len(units), "curate: problems", enabled=cfg.stage.progress, unit="shard") as bar:
        problems, contiguous = problem_order(units, bar)
        bar.set_postfix(problems=len(problems))
        extra: dict = {}
        reasons = problem_reasons(problems, cfg, paths, extra)
        bar.set_postfix(problems=len(problems), dropped=len(reasons))
    result = {"reasons": reasons, "contiguous": contiguous, "extra": extra, "problems": len(problems)}
    atomic_write_json(path, result)
    return result
