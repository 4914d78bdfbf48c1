"""A vLLM-shaped teacher server on 127.0.0.1 that scores token ids with a local model, for the on-policy
phase's teacher-server tests (distill.train.teacher_server) without a 30-60 s vLLM start.

It answers what TRL's `VLLMClient.get_sequence_logprobs` asks a `vllm serve` for: `GET /health`,
`GET /v1/models`, and `POST /v1/completions` with `prompt` a list of token-id lists, `max_tokens: 1` and
`prompt_logprobs: k`. Each choice's `prompt_logprobs` is shaped as vLLM 0.32 writes it (checked against a
real server, see the note of issue 16): `null` for the first position, then per position a dict from token
id (a string, JSON) to `{"logprob", "rank", "decoded_token"}` holding the top k and the token actually
there, with its 1-based rank. The log-probs are the model's raw log-softmax (temperature-free, as vLLM's
prompt log-probs are). Like vLLM, `prompt_logprobs` above `max_logprobs` is a 400. Every request body is
kept (`requests`); the server stops after `lifetime_s`, so a test that loops cannot hang the suite.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch


class LogprobServer:
    """Use as a context manager: `with LogprobServer(model_dir) as url: ...` (url without /v1)."""

    def __init__(self, model_dir: Path, name: str = "toy-teacher", max_logprobs: int = 20,
                 lifetime_s: float = 300.0) -> None:  # fmt: skip
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.name, self.max_logprobs, self.lifetime_s = name, max_logprobs, lifetime_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()

    def prompt_logprobs(self, ids: list[int], k: int) -> list[dict | None]:
        with torch.no_grad():
            lp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        out: list[dict | None] = [None]
        for pos in range(1, len(ids)):
            row, actual = lp[pos - 1], ids[pos]
            top = torch.topk(row, k)
            entries = {actual: float(row[actual])}  # vLLM lists the token actually there first
            entries |= {int(t): float(v) for v, t in zip(top.values, top.indices, strict=True)}
            out.append({
                str(t): {"logprob": v, "rank": int((row > v).sum()) + 1, "decoded_token": self.tok.decode([t])}
                for t, v in entries.items()
            })  # fmt: skip
        return out

    def answer(self, body: dict) -> tuple[int, dict]:
        k = body.get("prompt_logprobs")
        if k is not None and k > self.max_logprobs:
            msg = f"Requested prompt logprobs of {k}, which is greater than max allowed: {self.max_logprobs}"
            return 400, {"error": {"message": msg, "type": "BadRequestError", "code": 400}}
        prompts = body["prompt"]
        choices = [
            {"index": i, "text": "", "logprobs": None, "finish_reason": "length", "stop_reason": None,
             "prompt_logprobs": self.prompt_logprobs(p, k) if k is not None else None}
            for i, p in enumerate(prompts)
        ]  # fmt: skip
        return 200, {"id": "cmpl-fake", "object": "text_completion", "model": self.name, "choices": choices}

    def __enter__(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, {})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    status, payload = server.answer(body)  # one forward at a time: torch threads are few
                self._send(status, payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.timer = threading.Timer(self.lifetime_s, self.httpd.shutdown)
        self.timer.daemon = True
        self.timer.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
