"""The engine contract: a batch of prompts in, n completions per prompt out, each seeded per problem.

Seeding per problem (not per batch) is what makes shards and resumed runs reproduce an uninterrupted run:
a problem's samples do not depend on which other problems shared its batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from distill.core.config import ModelRef
from distill.core.paths import Paths

BACKENDS = ("vllm", "hf", "openai")


@dataclass
class SamplingConfig:
    n: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 160
    seed: int = 0
    # Passed to the chat template offline and sent to endpoints (`reasoning_effort`, and `extra_body.
    # chat_template_kwargs`); recorded in every sample's `sampling`, where phase rules can select by it.
    reasoning_effort: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineConfig:
    backend: str = "vllm"  # vllm | hf | openai
    # vllm
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    # None: eager on CPU, where torch.compile doubles engine start-up (measured on the toy teacher: ~65 s vs
    # ~30 s) for no decode speed-up; compiled graphs elsewhere.
    enforce_eager: bool | None = None
    # None: on CPU with one worker, the engine core and its worker run inside this process. vLLM otherwise
    # spawns two processes that each re-import vLLM: 30+ s of a toy engine's start-up, against ~3 s.
    in_process: bool | None = None
    enable_prefix_caching: bool = True
    # None: off on CPU, where vLLM 0.32's per-request seeded sampling crashes when a chunked prefill
    # discards a sampled token ("CPU Generator does not use offset"); vLLM's default elsewhere.
    enable_chunked_prefill: bool | None = None
    kv_cache_gib: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    # hf
    hf_threads: int = 0  # 0: torch default
    # openai
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    served_model: str | None = None
    concurrency: int = 16
    max_retries: int = 5
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0  # the longest a server's Retry-After is honoured before retrying anyway
    timeout_s: float = 600.0  # per request in total (connect to last byte), not per read
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    key: str
    messages: list[dict[str, str]]
    n: int
    seed: int


@dataclass(frozen=True)
class Completion:
    """`text` is in the student's training format (`<think>…</think>` + answer) where the engine parsed
    the teacher's format (distill.engines.formats); `raw` is what the teacher wrote, for audit."""

    text: str
    finish_reason: str  # "stop" | "length" | backend-specific
    prompt_tokens: int
    completion_tokens: int
    reasoning: str | None = None
    response: str | None = None
    raw: str | None = None
    format: str | None = None  # the resolved reasoning format; None: an engine that does not parse
    format_problem: str | None = None
    format_detail: str | None = None


class GenerationFailed(RuntimeError):
    """Some problems of a batch failed for good; the others finished. Carries both, so a resumable caller
    keeps the finished ones and a rerun generates only what failed, instead of losing the whole batch.

    `outputs` is aligned with the requests (None for a failed one), `failed` maps a request's key to why,
    and `fatal` is set when the endpoint will refuse everything (nothing more was sent after it)."""

    def __init__(self, outputs: list[list[Completion] | None], failed: dict[str, str], fatal: str | None):
        first = next(iter(failed.items()))
        super().__init__(f"{len(failed)} of {len(outputs)} problems failed; first: {first[0]}: {first[1]}")
        self.outputs, self.failed, self.fatal = outputs, failed, fatal


class Engine(Protocol):
    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def problem_seed(seed: int, problem_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)


def model_location(ref: str, paths: Paths) -> str:
    """The one local-or-hub resolver every stage uses: a local directory if the config names one that
    exists (absolute, under the launch directory, or shipped in the repo), else the string as given, which
    transformers and vLLM then read as a hub id (`org/name`, from the hub or the HF cache, with the
    model's `revision`)."""
    p = paths.resolve(ref)
    return str(p) if p.exists() else ref


def local_model_path(model: ModelRef, paths: Paths) -> str:
    return model_location(model.path, paths)


def local_tokenizer_path(model: ModelRef, paths: Paths) -> str:
    return model_location(model.tokenizer or model.path, paths)
