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


def _rows_for(problem: dict, comps: list, prompt: str, teacher: str, sampling: dict) -> list[dict]:
    out = []
    for idx, c in enumerate(comps):
        reasoning, response = split_completion(c.text)
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
        sampling: DictConfig,
    ):
        self.engine_cfg, self.model, self.paths = engine, model, paths
        self.prompt_template, self.system_prompt = prompt_template, system_prompt
        self.sampling = OmegaConf.to_object(sampling)
        self.sampling_dict = OmegaConf.to_container(sampling, resolve=True)
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

    def run_chunk(self, problems: list[dict]) -> list[dict]:
        n, seed = self.sampling.n, self.sampling.seed
        msgs = [messages_for(p["problem"], self.prompt_template, self.system_prompt) for p in problems]
        reqs = [
            Request(p["problem_id"], m, n, problem_seed(seed, p["problem_id"]))
            for p, m in zip(problems, msgs, strict=True)
        ]
        engine = self._engine()
        t0 = time.perf_counter()
        failure = None
        try:
            outs = engine.generate(reqs, self.sampling)
        except GenerationFailed as e:
            outs, failure = e.outputs, e
        finally:
            self.stats["generate_s"] += time.perf_counter() - t0
            for k, v in getattr(engine, "counters", {}).items():  # retries and give-ups, by cause
                self.stats[k] += v
        rows = []
        for p, m, comps in zip(problems, msgs, outs, strict=True):
            if comps is None:
                continue
            if len(comps) != n:
                raise RuntimeError(
                    f"engine returned {len(comps)} samples for {p['problem_id']}, expected {n}"
                )
            rows += _rows_for(p, comps, m[-1]["content"], self.model.name, self.sampling_dict)
        self.stats["samples"] += len(rows)
        self.stats["completion_tokens"] += sum(r["completion_tokens"] for r in rows)
        self.stats["prompt_tokens"] += sum(r["prompt_tokens"] for r in rows)
        if failure is not None:
            self.stats["failed_problems"] += len(failure.failed)
            raise ChunkFailed(rows, failure.failed, failure.fatal, str(failure)) from failure
        return rows

    def endpoint_counts(self) -> dict[str, int]:
        """Retries and give-ups so far (`retries`, `give_ups`, and per cause `retries.<cause>`...)."""
        return {k: int(v) for k, v in self.stats.items() if k.startswith(("retries", "give_ups"))}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
