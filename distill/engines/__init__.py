"""Teacher engines behind one interface: vLLM offline, transformers generate, any OpenAI-compatible API."""

from __future__ import annotations

from distill.config import EngineConfig, ModelRef
from distill.engines.base import Completion, Engine, Request, problem_seed
from distill.paths import Paths

BACKENDS = ("vllm", "hf", "openai")


def make_engine(cfg: EngineConfig, model: ModelRef, paths: Paths) -> Engine:
    """Imports the backend lazily: a CPU user of the openai backend never pays vLLM's import."""
    if cfg.backend == "vllm":
        from distill.engines.vllm_engine import VLLMEngine

        return VLLMEngine(cfg, model, paths)
    if cfg.backend == "hf":
        from distill.engines.hf_engine import HFEngine

        return HFEngine(cfg, model, paths)
    if cfg.backend == "openai":
        from distill.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(cfg, model, paths)
    raise ValueError(f"engine.backend={cfg.backend!r} is not one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Completion", "Engine", "Request", "make_engine", "problem_seed"]
