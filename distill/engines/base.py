"""The engine contract: a batch of prompts in, n completions per prompt out, each seeded per problem.

Seeding per problem (not per batch) is what makes shards and resumed runs reproduce an uninterrupted run:
a problem's samples do not depend on which other problems shared its batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from distill.config import ModelRef, SamplingConfig
from distill.paths import Paths


@dataclass(frozen=True)
class Request:
    key: str
    messages: list[dict[str, str]]
    n: int
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | backend-specific
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def problem_seed(seed: int, problem_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{problem_id}".encode()).hexdigest()[:8], 16)


def local_model_path(model: ModelRef, paths: Paths) -> str:
    """A local directory if the config names one that exists, else the string as given (a hub id)."""
    p = paths.resolve(model.path)
    return str(p) if p.exists() else model.path


def local_tokenizer_path(model: ModelRef, paths: Paths) -> str:
    return (
        local_model_path(ModelRef(path=model.tokenizer), paths)
        if model.tokenizer
        else local_model_path(model, paths)
    )
