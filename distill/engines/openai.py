"""Any OpenAI-compatible chat endpoint as teacher: a vLLM server, or a frontier API.

One request per sample (many APIs reject n>1), bounded concurrency, and retries on what a server may answer
better next time. Every way a request can go wrong is a named decision (`Fault`): a connection error, a
timeout, 408/409/429/5xx, a truncated JSON body, empty `choices` and `content: null` are retried (after the
server's Retry-After, bounded by `max_retry_after_s`, else exponential backoff); 401/403/404 and an HTML page
with status 200 say the endpoint will answer every request the same way, so nothing more is sent; any other
4xx fails that request only. A request that exhausts its retries fails its problem, not the batch: the engine
raises `GenerationFailed` carrying every problem that did finish, so a resumable caller keeps them.

Each request has a total deadline (`timeout_s`), not only a per-read timeout: a server trickling its body
cannot hold a request longer. The API key is read from the environment variable the config names, and goes
nowhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines import formats
from distill.engines.base import Completion, EngineConfig, GenerationFailed, Request, SamplingConfig
from distill.engines.chat import THINK_OPEN

log = logging.getLogger(__name__)
FATAL_STATUS = (401, 403, 404)  # a key, a permission, a model name or a URL: every request would get it
RETRY_STATUS = (408, 409, 429)  # and every 5xx


class Fault(Exception):
    """One attempt's failure, named by `cause` (the key of the retry counters), with the decision taken."""

    def __init__(
        self, cause: str, message: str, retryable: bool, fatal: bool = False, wait: float | None = None
    ):
        super().__init__(message)
        self.cause, self.retryable, self.fatal, self.wait = cause, retryable, fatal, wait


def retry_after_s(headers) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` as seconds or an HTTP date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / scale, 0.0)
        except ValueError:
            pass
        try:
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None
    return None


def _status_fault(e, url: str) -> Fault:
    status, text = e.status_code, f"{url}: HTTP {e.status_code}: {e.message}"
    if status in RETRY_STATUS or status >= 500:
        cause = "rate_limited" if status == 429 else f"http_{status}"
        return Fault(cause, text, retryable=True, wait=retry_after_s(e.response.headers))
    if status in FATAL_STATUS:
        return Fault(
            f"http_{status}", f"{text} (check engine.base_url, engine.served_model and the key)", False, True
        )
    return Fault(f"http_{status}", text, retryable=False)


def parse_completion(http, url: str, fmt: str = "auto") -> Completion:
    """A status-200 body read as a chat completion, or the named Fault of why it is not one."""
    ctype, text = http.headers.get("content-type", "?"), http.text
    try:
        data = json.loads(text)
    except ValueError as e:
        if "html" in ctype or text.lstrip()[:1] == "<":
            raise Fault(
                "html",
                f"{url}: status {http.status_code} with an HTML page ({ctype}, starts {text[:60]!r}) instead of a "
                "chat completion: engine.base_url must be the API root (e.g. http://host:8000/v1)",
                retryable=False,
                fatal=True,
            ) from None
        raise Fault(
            "malformed_json", f"{url}: status {http.status_code} but not JSON ({e}; {len(text)} bytes)", True
        ) from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        what = "empty `choices`" if choices == [] else f"no chat completion ({text[:120]!r})"
        raise Fault(
            "empty_choices" if choices == [] else "not_a_completion", f"{url}: status 200 with {what}", True
        )
    choice = choices[0]
    msg = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content, reasoning = msg.get("content"), msg.get("reasoning_content") or msg.get("reasoning")
    if not isinstance(content, (str, type(None))) or not isinstance(reasoning, (str, type(None))):
        raise Fault("not_a_completion", f"{url}: message content/reasoning is not text: {msg!r:.120}", True)
    finish = choice.get("finish_reason") or "stop"
    if content is None and not reasoning:
        raise Fault(
            "null_content",
            f"{url}: `content: null` and no reasoning (finish_reason {finish!r}): not written as an empty sample",
            retryable=True,
        )
    # No content but reasoning: the answer never came (truncated or stopped while thinking), so the think
    # block stays open and the sample has no response, as a local engine's raw text would.
    fmt = formats.reply_format(fmt, reasoning, content)
    if content is None:
        p = formats.Parsed(None, None, f"{THINK_OPEN}\n{reasoning.strip(chr(10))}")
    else:
        p = formats.from_server(reasoning, content, fmt, stopped=finish == "stop")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = [
        usage.get(k) if isinstance(usage.get(k), int) else 0 for k in ("prompt_tokens", "completion_tokens")
    ]
    return Completion(
        p.completion, str(finish), *tokens, reasoning=p.reasoning, response=p.answer, raw=p.raw,
        format=fmt, format_problem=p.problem, format_detail=p.detail,
    )  # fmt: skip


@dataclass
class _Batch:
    """One generate call's shared state: the first fatal fault stops every request not yet sent."""

    client: object
    sem: asyncio.Semaphore
    sampling: SamplingConfig
    fatal: Fault | None = None


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
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.client_kwargs = dict(
            base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=cfg.timeout_s
        )
        self.counters: Counter = Counter()  # the last generate call's retries and give-ups, by cause
        self.format = formats.resolve(model.reasoning_format, endpoint=True)  # `auto`: each reply decides

    async def _attempt(self, b: _Batch, r: Request, j: int, extra: dict) -> Completion:
        o = self.openai
        s = b.sampling
        effort = {"reasoning_effort": s.reasoning_effort} if s.reasoning_effort else {}
        try:
            async with b.sem:
                if b.fatal is not None:  # decided while this request waited for its turn
                    raise Fault("not_sent", f"not sent after a fatal answer: {b.fatal}", False)
                async with asyncio.timeout(self.cfg.timeout_s):
                    raw = await b.client.chat.completions.with_raw_response.create(
                        model=self.model_name,
                        messages=r.messages,
                        temperature=b.sampling.temperature,
                        top_p=b.sampling.top_p,
                        max_tokens=b.sampling.max_tokens,
                        seed=r.seed + j,
                        extra_body=extra or None,
                        **effort,
                    )
        except TimeoutError:
            raise Fault(
                "deadline", f"{self.url}: no complete answer within timeout_s={self.cfg.timeout_s}", True
            ) from None
        except o.APITimeoutError:
            raise Fault("timeout", f"{self.url}: timed out (timeout_s={self.cfg.timeout_s})", True) from None
        except o.APIConnectionError as e:
            raise Fault("connection", f"{self.url}: connection failed: {e.__cause__ or e}", True) from None
        except o.APIStatusError as e:
            raise _status_fault(e, self.url) from None
        return parse_completion(raw.http_response, self.url, self.format)

    async def _call(self, b: _Batch, r: Request, j: int) -> Completion:
        extra = dict(self.cfg.extra_body)
        if b.sampling.top_k > 0:
            extra["top_k"] = b.sampling.top_k
        if b.sampling.chat_template_kwargs:  # vLLM/SGLang servers hand these to the chat template
            extra["chat_template_kwargs"] = {
                **extra.get("chat_template_kwargs", {}),
                **b.sampling.chat_template_kwargs,
            }
        tries: list[str] = []
        while True:
            try:
                return await self._attempt(b, r, j, extra)
            except Fault as f:
                if f.cause == "not_sent":
                    self.counters["not_sent"] += 1
                    raise
                tries.append(f.cause)
                if f.fatal and b.fatal is None:
                    b.fatal = f
                if not f.retryable or len(tries) > self.cfg.max_retries:
                    raise self._give_up(f, r, j, tries) from None
                wait = self._wait(f, len(tries) - 1)
                self._count("retries", f.cause)
                log.info(
                    "%s sample %d: retry %d/%d in %.2f s: %s",
                    r.key,
                    j,
                    len(tries),
                    self.cfg.max_retries,
                    wait,
                    f,
                )
                await asyncio.sleep(wait)

    def _count(self, what: str, cause: str) -> None:
        self.counters[what] += 1
        self.counters[f"{what}.{cause}"] += 1

    def _give_up(self, f: Fault, r: Request, j: int, tries: list[str]) -> Fault:
        self._count("give_ups", f.cause)
        n = f"{len(tries)} {'try' if len(tries) == 1 else 'tries'}"
        msg = f"gave up after {n} ({', '.join(tries)}): {f}"
        log.warning("%s sample %d: %s", r.key, j, msg)
        return Fault(f.cause, msg, retryable=False)

    def _wait(self, f: Fault, attempt: int) -> float:
        """The server's Retry-After when it gave one (bounded by max_retry_after_s), else jittered backoff."""
        if f.wait is not None:
            return min(f.wait, self.cfg.max_retry_after_s)
        return self.cfg.backoff_s * 2**attempt * (0.5 + random.random())

    async def _all(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        async with self.openai.AsyncOpenAI(**self.client_kwargs) as client:
            b = _Batch(client, asyncio.Semaphore(self.cfg.concurrency), sampling)
            tasks = [self._call(b, r, j) for r in requests for j in range(r.n)]
            flat = await asyncio.gather(*tasks, return_exceptions=True)
        out, failed, i = [], {}, 0
        for r in requests:
            mine = flat[i : i + r.n]
            i += r.n
            errors = [e for e in mine if isinstance(e, BaseException)]
            if any(not isinstance(e, Fault) for e in errors):
                raise next(e for e in errors if not isinstance(e, Fault))
            out.append(None if errors else list(mine))
            if errors:  # why it failed, rather than that it was not sent after another's failure
                failed[r.key] = str(min(errors, key=lambda e: e.cause == "not_sent"))
        if failed:
            raise GenerationFailed(out, failed, str(b.fatal) if b.fatal else None)
        return out

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        self.counters = Counter()
        return asyncio.run(self._all(requests, sampling))

    def close(self) -> None:
        pass
