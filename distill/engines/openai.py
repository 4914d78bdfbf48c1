"""Any OpenAI-compatible chat endpoint as teacher: a vLLM server, or a frontier API.

One request per sample (many APIs reject n>1), bounded concurrency, and retries with exponential backoff on
the errors that are worth retrying (connection, timeout, 429, 5xx). The API key is read from the
environment variable the config names, and goes nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines import formats
from distill.engines.base import Completion, EngineConfig, Request, SamplingConfig

log = logging.getLogger(__name__)


class OpenAIEngine:
    def __init__(self, cfg: EngineConfig, model: ModelRef, paths: Paths):
        import openai

        if not cfg.base_url:
            raise ValueError("engine.base_url must be set for engine.backend=openai")
        key = os.environ.get(cfg.api_key_env)
        if not key:
            log.warning("%s is not set: sending requests without an API key", cfg.api_key_env)
        self.openai = openai
        self.cfg = cfg
        self.model_name = cfg.served_model or model.name
        self.client_kwargs = dict(
            base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=cfg.timeout_s
        )
        self.retryable = (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        )
        self.retries = 0
        self.format = formats.resolve(model.reasoning_format)

    async def _call(self, client, sem, r: Request, j: int, sampling: SamplingConfig) -> Completion:
        extra = dict(self.cfg.extra_body)
        if sampling.top_k > 0:
            extra["top_k"] = sampling.top_k
        if sampling.chat_template_kwargs:  # vLLM/SGLang servers hand these to the chat template
            extra["chat_template_kwargs"] = {
                **extra.get("chat_template_kwargs", {}),
                **sampling.chat_template_kwargs,
            }
        effort = {"reasoning_effort": sampling.reasoning_effort} if sampling.reasoning_effort else {}
        for attempt in range(self.cfg.max_retries + 1):
            try:
                async with sem:
                    resp = await client.chat.completions.create(
                        model=self.model_name,
                        messages=r.messages,
                        temperature=sampling.temperature,
                        top_p=sampling.top_p,
                        max_tokens=sampling.max_tokens,
                        seed=r.seed + j,
                        extra_body=extra or None,
                        **effort,
                    )
                break
            except self.retryable as e:
                if attempt == self.cfg.max_retries:
                    raise RuntimeError(f"{self.cfg.base_url}: gave up after {attempt + 1} tries: {e}") from e
                self.retries += 1
                await asyncio.sleep(self.cfg.backoff_s * 2**attempt * (0.5 + random.random()))
        choice = resp.choices[0]
        msg = choice.message
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
        if reasoning is None and msg.model_extra:
            reasoning = msg.model_extra.get("reasoning_content") or msg.model_extra.get("reasoning")
        usage = resp.usage
        p = formats.from_server(reasoning, msg.content, self.format)
        return Completion(
            p.completion,
            choice.finish_reason or "stop",
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            reasoning=p.reasoning,
            response=p.answer,
            raw=p.raw,
            format=self.format,
            format_problem=p.problem,
            format_detail=p.detail,
        )

    async def _all(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        sem = asyncio.Semaphore(self.cfg.concurrency)
        async with self.openai.AsyncOpenAI(**self.client_kwargs) as client:
            tasks = [[self._call(client, sem, r, j, sampling) for j in range(r.n)] for r in requests]
            flat = await asyncio.gather(*[t for group in tasks for t in group])
        out, i = [], 0
        for r in requests:
            out.append(list(flat[i : i + r.n]))
            i += r.n
        return out

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return asyncio.run(self._all(requests, sampling))

    def close(self) -> None:
        pass
