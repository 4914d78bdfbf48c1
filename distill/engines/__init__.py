"""Engines behind one interface (vLLM offline, transformers generate, any OpenAI-compatible API), the
chat rendering they share, and the Sampler that generate and eval both sample through.

Backends import lazily: a CPU user of the openai backend never pays vLLM's import.
"""

from __future__ import annotations

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines.base import BACKENDS, Completion, Engine, EngineConfig, Request, problem_seed


def make_engine(cfg: EngineConfig, model: ModelRef, paths: Paths) -> Engine:
    """Imports the backend lazily: a CPU user of the openai backend never pays vLLM's import."""
    if cfg.backend == "vllm":
        from distill.engines.vllm import VLLMEngine

        return VLLMEngine(cfg, model, paths)
    if cfg.backend == "hf":
        from distill.engines.hf import HFEngine

        return HFEngine(cfg, model, paths)
    if cfg.backend == "openai":
        from distill.engines.openai import OpenAIEngine

        return OpenAIEngine(cfg, model, paths)
    raise ValueError(f"engine.backend={cfg.backend!r} is not one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Completion", "Engine", "Request", "make_engine", "problem_seed"]
