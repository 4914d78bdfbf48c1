"""The eval stage: teacher, the student's initial weights and every curriculum phase, on held-out problems.

Every model is sampled through the same engines and Sampler as generate and scored with the curate stage's verifier,
so an accuracy here means the same thing as a verdict there. Each model's result is cached under its own
key (model fingerprint + eval settings): adding a model, or retraining one phase, re-evaluates only that.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.core.config import ModelRef
from distill.core.io import atomic_write_json
from distill.core.manifest import (
    Manifest,
    checked_output,
    config_key,
    model_fingerprint,
    stage_key,
    up_to_date,
    upstream,
)
from distill.core.paths import Paths
from distill.core.problems import data_source, load_problems, source_fingerprint
from distill.core.report import progress
from distill.core.schemas import EVAL_SAMPLE
from distill.core.shards import ShardWriter, dataset_record
from distill.engines.sampler import Sampler, SamplerConfig
from distill.eval.metrics import problem_scores, summarize

log = logging.getLogger(__name__)
STAGE = "eval"


@dataclass
class EvalConfig(SamplerConfig):
    name: str = "eval"
    problems: str = "heldout"  # a key of `data`
    # `teacher`, `student` (initial weights), and `train` (every phase the train stage finished)
    models: list[str] = field(default_factory=lambda: ["teacher", "student", "train"])
    answer_methods: list[str] = field(default_factory=lambda: ["boxed"])
    category_field: str = "category"  # a key of each problem's meta; missing: "all"
    num_workers: int | None = None
    strict: bool = True  # the verifier's strict rules, as curate's `verify.strict` default
    # a prediction needs a closed think block (curate's `answers.require_think`); false scores models that
    # answer without reasoning (a `none`-format model, or a base model asked without thinking)
    require_think: bool = True
    chunk_problems: int = 512


Config = EvalConfig
# Fields added after a release, at the value that scores as that release did: left out of the key.
NEUTRAL = {"stage.require_think": True}
NOT_IN_KEY = {
    "models",
    "num_workers",
    "chunk_problems",
    "progress",
    "engine.concurrency",
    "engine.hf_threads",
    "engine.max_retry_after_s",
}


def _train_models(paths: Paths) -> dict[str, str]:
    m = upstream(paths, "train", "eval.models=[..., train]")
    return {phase: m.outputs[phase]["path"] for phase in m.config["phases"]}


def resolve_models(cfg: DictConfig, paths: Paths) -> dict[str, DictConfig]:
    """Name -> ModelRef for every model the config asks for, in a stable order."""
    out: dict[str, DictConfig] = {}
    for name in cfg.stage.models:
        if name == "teacher":
            out["teacher"] = cfg.teacher
        elif name == "student":
            out["student"] = cfg.student
        elif name == "train":
            for phase, path in _train_models(paths).items():
                out[phase] = OmegaConf.merge(
                    cfg.student, OmegaConf.structured(ModelRef(name=f"{cfg.student.name}-{phase}", path=path))
                )
        else:
            raise ValueError(f"eval.models: unknown model {name!r}; use teacher, student or train")
    return out


class _Scores:
    """Per-category scores of one model, added a chunk of problems at a time (no sample text is kept)."""

    def __init__(self, e: DictConfig):
        self.e = e
        self.groups: dict[str, list] = defaultdict(list)  # category -> [(score, tokens, truncated, prompt)]

    def add(self, rows: list[dict]) -> None:
        by_problem: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_problem[r["problem_id"]].append(r)
        for rs in by_problem.values():
            score = problem_scores([r["verdict"] for r in rs], [r["pred"] for r in rs], self.e.sampling.n)
            item = (
                score,
                [(r["completion_tokens"], r["finish_reason"] == "length", r["prompt_tokens"]) for r in rs],
            )
            self.groups["all"].append(item)
            self.groups[str(rs[0]["meta"].get(self.e.category_field, "all"))].append(item)

    def result(self) -> dict:
        out = {}
        for cat, items in sorted(self.groups.items()):
            per = [t for _, ts in items for t in ts]
            out[cat] = summarize(
                [s for s, _ in items], [t[0] for t in per], [t[1] for t in per], [t[2] for t in per]
            )
        return out


def score_rows(rows: list[dict], e: DictConfig) -> dict:
    """Per-category scores of scored eval rows (verdict, pred, token counts, meta): what eval reports."""
    scores = _Scores(e)
    scores.add(rows)
    return scores.result()


def _sample_and_verify(
    model: DictConfig, problems: list[dict], e: DictConfig, paths: Paths, out: Path
) -> tuple[dict, dict, dict]:
    """Samples, verdicts and scores a chunk of problems at a time, each chunk's rows written to the model's
    shard and dropped: (shard record, scores by category, sampler stats)."""
    from distill.curate.answers import extract_answer
    from distill.curate.verify import Verifier

    sampler = Sampler(e.engine, model, paths, e.prompt_template, e.system_prompt, e.sampling)
    scores = _Scores(e)
    try:
        with (
            ShardWriter(out, EVAL_SAMPLE) as w,
            progress(len(problems), f"eval {model.name}", enabled=e.progress) as bar,
        ):
            for i in range(0, len(problems), e.chunk_problems):
                chunk = problems[i : i + e.chunk_problems]
                rows = sampler.run_chunk(chunk)
                for r in rows:
                    r["pred"] = extract_answer(
                        r["completion"], e.answer_methods, require_think=e.require_think
                    ).answer
                pairs = [(r["answer"], r["pred"]) for r in rows]
                for r, v in zip(rows, Verifier(e.num_workers, strict=e.strict).verdicts(pairs), strict=True):
                    r["verdict"] = v
                scores.add(rows)
                w.write(rows)
                bar.update(len(chunk))
    finally:
        sampler.close()
    return w.record, scores.result(), dict(sampler.stats)


def _model_key(
    model: DictConfig, cfg: DictConfig, paths: Paths, base_keys: list[str]
) -> tuple[str, dict, dict]:
    """(key, keyed config, weights fingerprint) of one model's evaluation."""
    keyed = {
        "stage": OmegaConf.to_container(cfg.stage, resolve=True),
        "model": OmegaConf.to_container(model, resolve=True),
    }
    fp = model_fingerprint(paths.resolve(model.path), model.name, model.revision)
    return stage_key(keyed, [*base_keys, fp["key"]], NOT_IN_KEY, neutral=NEUTRAL), keyed, fp


def _eval_model(
    name: str, model: DictConfig, problems: list[dict], cfg: DictConfig, paths: Paths, src_fp: dict
) -> Manifest:
    e = cfg.stage
    key, keyed, fp = _model_key(model, cfg, paths, [src_fp["key"]])
    mdir = paths.stage_dir(STAGE) / name
    if m := up_to_date(mdir, key, cfg.force, f"eval {name}"):
        return m
    t0 = time.perf_counter()
    rec, scores, stats = _sample_and_verify(
        model, problems, e, paths, mdir / "samples" / "part-00000.parquet"
    )
    m = Manifest(
        stage=f"{STAGE}/{name}", key=key, config=keyed, inputs=[src_fp, fp],
        outputs={"samples": dataset_record(mdir / "samples", [rec])},
        metrics=scores, timings={"total_s": time.perf_counter() - t0, **stats},
    )  # fmt: skip
    m.write(mdir)
    return m


def _print_table(results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    cats = list(next(iter(results.values())))
    table = Table(title="eval (held-out)", header_style="bold")
    for col in ("model", "category", "avg@k", "pass@k", "cons@k", "mean tok", "median tok", "trunc"):
        table.add_column(col, justify="left" if col in ("model", "category") else "right")
    for name, by_cat in results.items():
        for cat in cats:
            s = by_cat[cat]
            table.add_row(name, cat, f"{s['avg@k']:.3f}", f"{s['pass@k']:.3f}", f"{s['cons@k']:.3f}",
                          f"{s['mean_tokens']:.1f}", f"{s['median_tokens']:.0f}", f"{s['truncation_rate']:.3f}")  # fmt: skip
    Console(width=110).print(table)


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    e = cfg.stage
    src = data_source(cfg, e.problems, "eval.problems")
    t0 = time.perf_counter()
    src_fp = source_fingerprint(src, paths)
    models = resolve_models(cfg, paths)
    out_dir = paths.stage_dir(STAGE)
    key = config_key(
        {"models": {n: _model_key(m, cfg, paths, [src_fp["key"]])[0] for n, m in models.items()}}, []
    )
    if done := up_to_date(out_dir, key, cfg.force, "eval"):
        return done
    if "train" in e.models:  # each phase's weights checked against train's manifest before they are loaded
        trained = upstream(paths, "train", "eval")
        for phase in trained.config["phases"]:
            checked_output(trained, phase, f"eval {phase}")
    problems = None
    results, inputs = {}, [src_fp]
    for name, model in models.items():
        problems = problems or load_problems(src, paths)
        m = _eval_model(name, model, problems, cfg, paths, src_fp)
        results[name] = m.metrics
        inputs.append(
            {
                "name": name,
                "path": str(paths.stage_dir(STAGE) / name / "manifest.json"),
                "sha256": None,
                "key": m.key,
            }
        )
    sampling = OmegaConf.to_container(e.sampling, resolve=True)
    atomic_write_json(out_dir / "metrics.json", {"sampling": sampling, "k": e.sampling.n, "models": results})
    m = Manifest(
        stage=STAGE, key=key, config=OmegaConf.to_container(e, resolve=True),
        inputs=inputs, outputs={"metrics": {"path": str(out_dir / "metrics.json"), "rows": len(results)}},
        metrics={name: r["all"] for name, r in results.items()}, timings={"total_s": time.perf_counter() - t0},
    )  # fmt: skip
    _log_wandb(cfg, paths, results, sampling)
    m.write(out_dir)
    _print_table(results)
    return m


def _log_wandb(cfg: DictConfig, paths: Paths, results: dict, sampling: dict) -> None:
    from distill.core.tracking import wandb_run

    with wandb_run(
        cfg, paths, job="eval", config={"eval": OmegaConf.to_container(cfg.stage, resolve=True)}
    ) as run:
        if run is None:
            return
        import wandb

        cols = ["model", "category", *next(iter(next(iter(results.values())).values())).keys()]
        table = wandb.Table(columns=cols)
        for name, by_cat in results.items():
            for cat, s in by_cat.items():
                table.add_data(name, cat, *s.values())
                run.summary[f"{name}/{cat}/avg@k"] = s["avg@k"]
        run.log({"eval/table": table, "eval/sampling_temperature": sampling["temperature"]})
