"""The openai backend: retries with backoff against a flaky local endpoint; the key is never written.
Every other fault of a misbehaving endpoint is in test_openai_faults.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from conftest import output_rows, run_distill

SECRET = "sk-test-secret-0123456789"


class _Flaky(BaseHTTPRequestHandler):
    fail_first = 2
    calls: list[dict] = []

    def log_message(self, *a):  # keep test output clean
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"auth": self.headers.get("Authorization"), "body": body})
        if len(type(self).calls) <= type(self).fail_first:
            self.send_response(503)
            self.end_headers()
            return
        content = "The answer is \\boxed{" + str(body["seed"] % 7) + "}."
        payload = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "reasoning_content": "1 + 1 = 2"}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }  # fmt: skip
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def flaky_server():
    _Flaky.calls = []
    srv = HTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_openai_backend_retries_and_hides_key(flaky_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    m = run_distill(
        [
            "stage=generate",
            "experiment=openai_teacher",
            f"run.root={tmp_path}",
            f"stage.engine.base_url={flaky_server}",
            "stage.engine.api_key_env=DISTILL_TEST_KEY",
            "stage.engine.backoff_s=0.01",
            "stage.engine.concurrency=2",
            "data.train.limit=3",
            "stage.sampling.n=2",
        ]
    )["generate"]
    assert m.outputs["samples"]["rows"] == 6
    assert len(_Flaky.calls) == 6 + 2  # two 503s retried
    assert m.metrics["retries"] == 2 and m.metrics["retries_by_cause"] == {"http_503": 2}
    assert m.metrics["give_ups"] == 0
    assert all(c["auth"] == f"Bearer {SECRET}" for c in _Flaky.calls)
    assert {c["body"]["model"] for c in _Flaky.calls} == {"toy-teacher"}
    rows = output_rows(tmp_path / "openai-teacher/generate", "samples")
    assert rows[0]["reasoning"] == "1 + 1 = 2" and rows[0]["response"].startswith("The answer is")
    assert rows[0]["completion"].startswith("<think>\n1 + 1 = 2\n</think>\n\n")
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="ignore"), f"API key leaked into {f}"


def test_openai_backend_gives_up_with_a_clear_error(flaky_server, tmp_path):
    _Flaky.fail_first = 10**6
    try:
        with pytest.raises(
            RuntimeError, match=f"gave up after 2 tries .*{flaky_server}/chat/completions: HTTP 503"
        ):
            run_distill(
                ["stage=generate", "experiment=openai_teacher", f"run.root={tmp_path}",
                 f"stage.engine.base_url={flaky_server}", "stage.engine.max_retries=1",
                 "stage.engine.backoff_s=0.01", "data.train.limit=1", "stage.sampling.n=1"]
            )  # fmt: skip
    finally:
        _Flaky.fail_first = 2


class _Plain(BaseHTTPRequestHandler):
    """A model that answers right with no reasoning at all (a `none`-format model, a base model asked not
    to think): it finds the held-out problem in the prompt and boxes its answer."""

    answers: dict[str, str] = {}

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        ans = next(a for p, a in type(self).answers.items() if p in prompt)
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"\\boxed{{{ans}}}"}}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}  # fmt: skip
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_eval_scores_answers_without_reasoning_only_when_asked(tmp_path, monkeypatch):
    from conftest import TOY
    from distill.core.io import read_rows

    _Plain.answers = {r["problem"]: r["answer"] for r in read_rows(TOY / "problems" / "heldout.jsonl")}
    srv = HTTPServer(("127.0.0.1", 0), _Plain)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("DISTILL_TEST_KEY", SECRET)
    common = ["stage=eval", f"run.root={tmp_path}", "stage.models=[teacher]", "data.heldout.limit=4",
              "stage.sampling.n=2", "stage.engine.backend=openai", "stage.engine.api_key_env=DISTILL_TEST_KEY",
              f"stage.engine.base_url=http://127.0.0.1:{srv.server_address[1]}/v1", "wandb.enabled=false"]  # fmt: skip
    try:
        strict = run_distill(common)["eval"]
        lenient = run_distill([*common, "stage.require_think=false"])["eval"]
    finally:
        srv.shutdown()
    assert strict.metrics["teacher"]["avg@k"] == 0.0  # no think block: no prediction by default
    assert lenient.metrics["teacher"]["avg@k"] == 1.0 and lenient.key != strict.key
