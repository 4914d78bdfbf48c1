"""The Sampler: one model sampled n times per problem through an engine, rows in the sample schema.

Shared by generate (the teacher writing traces) and eval (every model under test), so a model is sampled
the same way whether it writes training data or is being measured.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from distill.core.paths import Paths
from distill.engines import make_engine
from distill.engines.base import EngineConfig, GenerationFailed, Request, SamplingConfig, problem_seed
from distill.engines.chat import DEFAULT_PROMPT, messages_for, split_completion


@dataclass
class SamplerConfig:
    """What generate and eval share: both sample through `Sampler`, so a model is sampled
    the same way whether it is the teacher writing traces or a model under test."""

    problems: str = "train"  # a key of `data`
    prompt_template: str = DEFAULT_PROMPT
    system_prompt: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    chunk_problems: int = 256
    progress: bool = True


def _rows_for(
    problem: dict, comps: list, prompt: str, teacher: str, sampling: dict, first_idx: int = 0
) -> list[dict]:
    out = []
    for idx, c in enumerate(comps, start=first_idx):
        if getattr(c, "format", None) is None:  # an engine that does not parse formats
            reasoning, response = split_completion(c.text)
        else:
            reasoning, response = c.reasoning, c.response
        out.append(
            {
                **problem,
                "sample_idx": idx,
                "prompt": prompt,
                "completion": c.text,
                "reasoning": reasoning,
                "response": response,
                "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "teacher": teacher,
                "sampling": sampling,
                # the teacher's own text where it differs from `completion` (harmony, R1-style), for audit
                "raw_completion": c.raw if getattr(c, "raw", None) not in (None, c.text) else None,
                "reasoning_format": getattr(c, "format", None),
                "format_problem": getattr(c, "format_problem", None),
                "format_detail": getattr(c, "format_detail", None),
            }
        )
    return out


class ChunkFailed(RuntimeError):
    """Some problems of a chunk failed for good: `rows` are the finished problems' rows (keep them),
    `failed` maps each failed problem id to why, `fatal` says the endpoint refuses everything (stop)."""

    def __init__(self, rows: list[dict], failed: dict[str, str], fatal: str | None, message: str):
        super().__init__(message)
        self.rows, self.failed, self.fatal = rows, failed, fatal


class Sampler:
    """An engine (started on first need: a fully-resumed shard never starts one) plus throughput counters.

    Shared by generate (the teacher) and eval (every model under test), so both sample the same way.
    """

    def __init__(
        self,
        engine: DictConfig,
        model: DictConfig,
        paths: Paths,
        prompt_template: str,
        system_prompt: str | None,
        sampling: DictConfig | list[DictConfig],
    ):
        """`sampling` may be a list of passes (e.g. one per reasoning effort): each problem gets every
        pass's samples, numbered on from the previous pass's, in one sample set."""
        self.engine_cfg, self.model, self.paths = engine, model, paths
        self.prompt_template, self.system_prompt = prompt_template, system_prompt
        passes = sampling if isinstance(sampling, list) else [sampling]
        self.passes = [(OmegaConf.to_object(s), OmegaConf.to_container(s, resolve=True)) for s in passes]
        self.sampling, self.sampling_dict = self.passes[0]
        self.engine = None
        self.stats = defaultdict(float)

    def _engine(self):
        if self.engine is None:
            t0 = time.perf_counter()
            self.engine = make_engine(
                OmegaConf.to_object(self.engine_cfg), OmegaConf.to_object(self.model), self.paths
            )
            self.stats["engine_init_s"] += time.perf_counter() - t0
        return self.engine

    @property
    def samples_per_problem(self) -> int:
        return sum(s.n for s, _ in self.passes)

    def _generate(
        self, reqs: list[Request], sampling: SamplingConfig
    ) -> tuple[list, GenerationFailed | None]:
        """One engine call: (outputs aligned with `reqs`, None for a failed one; the failure, if any)."""
        engine = self._engine()
        t0 = time.perf_counter()
        try:
            return engine.generate(reqs, sampling), None
        except GenerationFailed as e:
            return e.outputs, e
        finally:
            self.stats["generate_s"] += time.perf_counter() - t0
            for k, v in getattr(engine, "counters", {}).items():  # retries and give-ups, by cause
                self.stats[k] += v

    def run_chunk(self, problems: list[dict]) -> list[dict]:
        """Every pass's samples of each problem; a problem that failed in any pass is left out whole (resume
        keeps complete problems only) and reported through ChunkFailed with the finished ones' rows."""
        msgs = [messages_for(p["problem"], self.prompt_template, self.system_prompt) for p in problems]
        by_problem: list[list[dict] | None] = [[] for _ in problems]
        failed: dict[str, str] = {}
        fatal: str | None = None
        first = 0
        for sampling, sampling_dict in self.passes:
            n = sampling.n
            todo = [i for i, rs in enumerate(by_problem) if rs is not None]
            if not todo or fatal:
                break
            reqs = [
                Request(
                    problems[i]["problem_id"],
                    msgs[i],
                    n,
                    problem_seed(sampling.seed, problems[i]["problem_id"]),
                )
                for i in todo
            ]
            outs, failure = self._generate(reqs, sampling)
            if failure is not None:
                failed.update(failure.failed)
                fatal = fatal or failure.fatal
            for i, comps in zip(todo, outs, strict=True):
                p = problems[i]
                if comps is None:
                    by_problem[i] = None
                    continue
                if len(comps) != n:
                    raise RuntimeError(
                        f"engine returned {len(comps)} samples for {p['problem_id']}, expected {n}"
                    )
                by_problem[i] += _rows_for(
                    p, comps, msgs[i][-1]["content"], self.model.name, sampling_dict, first
                )
            first += n
        rows = [r for rs in by_problem if rs is not None for r in rs]
        self.stats["samples"] += len(rows)
        self.stats["completion_tokens"] += sum(r["completion_tokens"] for r in rows)
        self.stats["prompt_tokens"] += sum(r["prompt_tokens"] for r in rows)
        if failed:
            self.stats["failed_problems"] += len(failed)
            pid, why = next(iter(failed.items()))
            msg = f"{len(failed)} of {len(problems)} problems failed; first: {pid}: {why}"
            raise ChunkFailed(rows, failed, fatal, msg)
        return rows

    def endpoint_counts(self) -> dict[str, int]:
        """Retries and give-ups so far (`retries`, `give_ups`, and per cause `retries.<cause>`...)."""
        return {k: int(v) for k, v in self.stats.items() if k.startswith(("retries", "give_ups"))}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
