"""A misbehaving OpenAI-compatible endpoint on 127.0.0.1, for the openai backend's tests.

It answers `POST /v1/chat/completions` with a completion that depends only on the request (model, messages,
seed), so a run through faults can be compared byte for byte with a clean run. Faults are injected at
configurable rates; which fault a request gets is a hash of (plan seed, request body, how many times that
body was seen), not of arrival order, so a plan injects the same faults under any concurrency and request
counts are exact. A `rule(body, attempt)` overrides the rates for targeted cases (one poisoned problem).

The server is bounded: past `max_requests` it drops every connection and stops itself, and it stops after
`lifetime_s` whatever happens, so a test that loops cannot hang the suite.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = (
    "400",  # a request the server refuses (e.g. too long): not worth retrying
    "401",  # a wrong key: every request would get it
    "429",  # rate limited, with Retry-After
    "500",
    "503",
    "slow",  # a well-formed answer after `slow_s` (longer than the client's timeout)
    "drop",  # the connection closed without a response
    "trickle",  # a well-formed answer whose body arrives in pieces over `trickle_s`
    "malformed",  # status 200, application/json, a truncated JSON body
    "html",  # status 200, an HTML page (a proxy or a web UI behind the wrong base_url)
    "empty_choices",  # status 200, `choices: []`
    "null_content",  # status 200, `message.content: null` and no reasoning
)
Rule = Callable[[dict, int], "str | None"]


def completion_for(body: dict) -> tuple[str, str]:
    """(reasoning, content) of the clean answer: a function of the request alone."""
    h = hashlib.sha256(json.dumps([body.get("messages"), body.get("seed")], sort_keys=True).encode())
    v = int(h.hexdigest()[:8], 16)
    return f"{v % 97} + {v % 89} = {v % 97 + v % 89}", f"The answer is \\boxed{{{v % 1000}}}."


def pick(rates: dict[str, float], seed: int, key: str, attempt: int) -> str | None:
    """The fault the rates give to one attempt of one request body (None: none), the same in every run."""
    u = int(hashlib.sha256(f"{seed}:{key}:{attempt}".encode()).hexdigest()[:8], 16) / 2**32
    for name, rate in rates.items():
        if u < rate:
            return name
        u -= rate
    return None


class FaultServer:
    """A threaded HTTP server with a fault plan; use as a context manager (it stops on exit)."""

    def __init__(
        self,
        rates: dict[str, float] | None = None,
        *,
        seed: int = 0,
        rule: Rule | None = None,
        max_requests: int = 500,
        lifetime_s: float = 30.0,
        retry_after: str | None = "0.2",
        slow_s: float = 1.0,
        trickle_s: float = 1.0,
    ):
        unknown = set(rates or {}) - set(FAULTS)
        if unknown or sum((rates or {}).values()) > 1:
            raise ValueError(f"fault rates {rates}: unknown {sorted(unknown)} or summing over 1")
        self.rates, self.seed, self.rule = dict(rates or {}), seed, rule
        self.max_requests, self.lifetime_s = max_requests, lifetime_s
        self.retry_after, self.slow_s, self.trickle_s = retry_after, slow_s, trickle_s
        self.log: list[dict] = []  # one record per request: time, fault, seed, attempt
        self.faults: Counter = Counter()
        self.overflowed = False
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        handler = type("Handler", (_Handler,), {"plan": self})
        self._srv = _Server(("127.0.0.1", 0), handler)
        self._srv.daemon_threads = True
        self._srv.block_on_close = False
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._closer.join(5)

    def stop(self) -> None:
        """Stops serving; callable from a handler or the lifetime timer (shutdown runs in its own thread)."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()  # wakes sleeping handlers
        self._timer.cancel()
        self._closer = threading.Thread(target=self._close, daemon=True)
        self._closer.start()

    def _close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def choose(self, body: dict) -> str | None:
        """The fault for this request (None: a clean answer); records it."""
        key = json.dumps(body, sort_keys=True)
        with self._lock:
            if len(self.log) >= self.max_requests:
                self.overflowed = True
                return "overflow"
            attempt = self._seen[key]
            self._seen[key] += 1
            fault = self.rule(body, attempt) if self.rule else None
            fault = pick(self.rates, self.seed, key, attempt) if fault is None else fault
            fault = None if fault == "ok" else fault
            rec = {
                "t": time.monotonic(),
                "fault": fault,
                "attempt": attempt,
                "seed": body.get("seed"),
                "key": key,
            }
            self.log.append(rec)
            self.faults[fault or "ok"] += 1
            return fault

    def sleep(self, seconds: float) -> bool:
        """Sleeps unless the server stops first; False when it stopped."""
        return not self._stop.wait(seconds)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops the SYNs of a burst: a 1 s client stall, not a fault

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (its deadline) closes mid-answer: expected here, not worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    plan: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.path.endswith("/chat/completions"):
            return self._send(404, b'{"error": {"message": "not found"}}')
        fault, plan = self.plan.choose(body), self.plan
        if fault in ("drop", "overflow"):
            self.close_connection = True
            self.connection.close()
            if fault == "overflow":
                plan.stop()
            return None
        if fault and fault.isdigit():
            headers = {"Retry-After": plan.retry_after} if fault == "429" and plan.retry_after else {}
            return self._send(
                int(fault), b'{"error": {"message": "injected %s"}}' % fault.encode(), headers=headers
            )
        if fault == "html":
            return self._send(200, b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>", "text/html")
        if fault == "slow" and not plan.sleep(plan.slow_s):
            return None
        data = json.dumps(_payload(body, fault)).encode()
        if fault == "malformed":
            return self._send(200, data[: len(data) // 2])
        if fault == "trickle":
            return self._trickle(data)
        return self._send(200, data)

    def _trickle(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        pieces = 10
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            self.wfile.write(data[i : i + step])
            self.wfile.flush()
            if not self.plan.sleep(self.plan.trickle_s / pieces):
                return


def _payload(body: dict, fault: str | None) -> dict:
    reasoning, content = completion_for(body)
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    if fault == "null_content":
        message = {"role": "assistant", "content": None}
    choices = [] if fault == "empty_choices" else [{"index": 0, "finish_reason": "stop", "message": message}]
    return {
        "id": "chatcmpl-fault", "object": "chat.completion", "created": 0, "model": body.get("model"),
        "choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }  # fmt: skip
