"""The openai backend against a misbehaving endpoint (tests/fault_server.py): every fault is a named decision
with the URL in its message, retries honour Retry-After and a total deadline, a request that gives up fails
its problem and not its chunk, and a run through 30% faults writes the same bytes as a clean run."""

from __future__ import annotations

import json
import time

import pytest
from fault_server import FAULTS, FaultServer, completion_for

from conftest import output_bytes, run_distill, stage_config
from distill.core.config import ModelRef
from distill.engines.base import EngineConfig, GenerationFailed, Request, SamplingConfig, problem_seed
from distill.engines.chat import join_reasoning, split_completion
from distill.engines.openai import OpenAIEngine, parse_completion, retry_after_s

CAUSE = {
    "malformed": "malformed_json",
    "empty_choices": "empty_choices",
    "null_content": "null_content",
    "500": "http_500",
    "503": "http_503",
    "429": "rate_limited",
    "drop": "connection",
}
SAMPLING = SamplingConfig(n=2, max_tokens=16)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sk-test")


def _engine(url: str, **kw) -> OpenAIEngine:
    kw = {"backoff_s": 0.01, "timeout_s": 5.0, "max_retries": 2} | kw
    return OpenAIEngine(
        EngineConfig(backend="openai", base_url=url, api_key_env="DISTILL_TEST_KEY", **kw), ModelRef(), None
    )


def _reqs(k: int = 3) -> list[Request]:
    return [Request(f"p{i}", [{"role": "user", "content": f"problem {i}"}], 2, 1000 * i) for i in range(k)]


def _clean(r: Request, j: int) -> str:
    body = {"messages": r.messages, "seed": r.seed + j}
    return join_reasoning(*completion_for(body))


def _texts(outs) -> list[list[str] | None]:
    return [None if o is None else [c.text for c in o] for o in outs]


def _expected(reqs: list[Request]) -> list[list[str]]:
    return [[_clean(r, j) for j in range(r.n)] for r in reqs]


def _first(fault: str):
    return lambda body, attempt: fault if attempt == 0 else "ok"


def _always(fault: str):
    return lambda body, attempt: fault


@pytest.mark.parametrize("fault", sorted(CAUSE))
def test_a_fault_once_is_retried_and_counted(fault):
    reqs = _reqs()
    with FaultServer(rule=_first(fault), max_requests=20, lifetime_s=20) as srv:
        engine = _engine(srv.url)
        assert _texts(engine.generate(reqs, SAMPLING)) == _expected(reqs)
    assert len(srv.log) == 12 and not srv.overflowed
    assert engine.counters["retries"] == 6 and engine.counters[f"retries.{CAUSE[fault]}"] == 6


@pytest.mark.parametrize(
    "fault, says",
    [
        ("malformed", "not JSON"),
        ("empty_choices", "empty `choices`"),
        ("null_content", "`content: null` and no reasoning"),
        ("html", "HTML page"),
    ],
)
def test_garbage_that_persists_is_named_with_the_url(fault, says):
    with FaultServer(rule=_always(fault), max_requests=20, lifetime_s=20) as srv:
        engine = _engine(srv.url, max_retries=1, concurrency=1)
        with pytest.raises(GenerationFailed) as e:
            engine.generate(_reqs(), SAMPLING)
    msg = str(e.value)
    assert f"{srv.url}/chat/completions" in msg and says in msg, msg
    assert e.value.outputs == [None, None, None]  # nothing written as if it were a sample
    if fault == "html":  # the endpoint answers everything so: one request, nothing more sent
        assert "engine.base_url" in msg and e.value.fatal and len(srv.log) == 1
    else:
        assert len(srv.log) == 12 and e.value.fatal is None


def test_a_refused_request_fails_only_its_problem():
    """400 for one problem: not retried, the others finish; 401: nothing more is sent after it."""
    reqs = _reqs(4)
    poison = lambda body, attempt: "400" if body["seed"] // 1000 == 2 else "ok"  # noqa: E731
    with FaultServer(rule=poison, max_requests=20, lifetime_s=20) as srv:
        with pytest.raises(GenerationFailed) as e:
            _engine(srv.url).generate(reqs, SAMPLING)
    assert list(e.value.failed) == ["p2"] and "HTTP 400" in e.value.failed["p2"]
    assert _texts(e.value.outputs) == [*_expected(reqs)[:2], None, _expected(reqs)[3]]
    assert len(srv.log) == 8 and e.value.fatal is None
    with FaultServer(rule=_always("401"), max_requests=20, lifetime_s=20) as srv:
        with pytest.raises(GenerationFailed, match="HTTP 401.*check engine.base_url") as e:
            _engine(srv.url, concurrency=1).generate(reqs, SAMPLING)
    assert len(srv.log) == 1 and e.value.fatal


def _waits(srv: FaultServer) -> list[float]:
    first = {r["key"]: r["t"] for r in srv.log if r["attempt"] == 0}
    return [r["t"] - first[r["key"]] for r in srv.log if r["attempt"] == 1]


def test_retry_after_is_honoured_and_bounded():
    with FaultServer(rule=_first("429"), retry_after="0.4", max_requests=20, lifetime_s=20) as srv:
        _engine(srv.url).generate(_reqs(2), SAMPLING)
    assert len(_waits(srv)) == 4 and min(_waits(srv)) >= 0.4, _waits(srv)  # backoff_s alone would be 0.01
    with FaultServer(rule=_first("429"), retry_after="30", max_requests=20, lifetime_s=20) as srv:
        _engine(srv.url, max_retry_after_s=0.2).generate(_reqs(2), SAMPLING)
    assert 0.2 <= min(_waits(srv)) and max(_waits(srv)) < 3, _waits(srv)


def test_retry_after_forms():
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3 < retry_after_s({"retry-after": date}) <= 5
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_a_trickled_body_is_cut_at_the_total_deadline():
    """Each piece arrives within the read timeout; the request as a whole may not take longer than timeout_s."""
    reqs = [Request("p0", [{"role": "user", "content": "x"}], 1, 7)]
    with FaultServer(rule=_first("trickle"), trickle_s=3.0, max_requests=5, lifetime_s=20) as srv:
        engine = _engine(srv.url, timeout_s=0.8)
        t0 = time.perf_counter()
        assert _texts(engine.generate(reqs, SamplingConfig(n=1))) == _expected(reqs)
        took = time.perf_counter() - t0
    assert took < 2.5 and engine.counters["retries.deadline"] == 1 and len(srv.log) == 2, took


def test_reasoning_without_content_is_an_open_thought():
    class Http:
        headers, status_code = {"content-type": "application/json"}, 200
        text = json.dumps(
            {"choices": [{"finish_reason": "length", "message": {"content": None, "reasoning": "1+"}}]}
        )

    c = parse_completion(Http(), "http://x/v1/chat/completions")
    assert split_completion(c.text) == ("1+", None) and c.finish_reason == "length"


# --- through the generate stage ---------------------------------------------------------------------------

LIMIT, N = 24, 2


def _overrides(root, url: str, *extra: str) -> list[str]:
    return ["stage=generate", "experiment=openai_teacher", f"run.root={root}", f"stage.engine.base_url={url}",
            "stage.engine.api_key_env=DISTILL_TEST_KEY", "stage.engine.backoff_s=0.01", "stage.engine.concurrency=8",
            f"data.train.limit={LIMIT}", f"stage.sampling.n={N}", "wandb.enabled=false", *extra]  # fmt: skip


def _samples(root) -> dict[str, bytes]:
    return output_bytes(root / "openai-teacher/generate", "samples")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    with FaultServer(max_requests=LIMIT * N, lifetime_s=60) as srv:
        run_distill(_overrides(root, srv.url))
    return _samples(root)


def _poisoned(index: int, bad_attempts: int, fault: str):
    """A rule failing every sample of the toy problem at `index` for its first `bad_attempts` attempts."""
    cfg = stage_config("generate", ["experiment=openai_teacher"])
    base = problem_seed(cfg.stage.sampling.seed, f"toy-train-{index:05d}")
    return lambda body, attempt: fault if 0 <= body["seed"] - base < N and attempt < bad_attempts else "ok"


def test_a_request_that_gives_up_loses_only_its_problem(tmp_path, clean_run):
    with FaultServer(rule=_poisoned(5, 10**6, "500"), max_requests=100, lifetime_s=60) as srv:
        args = _overrides(tmp_path, srv.url, "stage.engine.max_retries=1", "stage.chunk_problems=8")
        with pytest.raises(
            RuntimeError, match=r"1 of 24 problems failed; first: toy-train-00005: gave up"
        ) as e:
            run_distill(args)
        assert srv.url in str(e.value) and "rerun" in str(e.value)
        log = (
            next((tmp_path / "openai-teacher/generate/parts").rglob("shard-*.jsonl")).read_text().splitlines()
        )
        pids = {json.loads(x)["problem_id"] for x in log}
        assert len(log) == (LIMIT - 1) * N and "toy-train-00005" not in pids  # its chunk's 7 others are kept
        sent, srv.rule = len(srv.log), None
        run_distill(args)
        assert len(srv.log) - sent == N  # the rerun asks only for the missing problem
    assert _samples(tmp_path) == clean_run


def test_a_short_outage_is_healed_by_the_second_pass_and_reported(tmp_path, clean_run):
    with FaultServer(rule=_poisoned(3, 2, "503"), max_requests=100, lifetime_s=60) as srv:
        m = run_distill(_overrides(tmp_path, srv.url, "stage.engine.max_retries=1"))["generate"]
    assert _samples(tmp_path) == clean_run
    assert m.metrics["give_ups"] == N and m.metrics["give_ups_by_cause"] == {"http_503": N}
    assert m.metrics["retries"] == N and m.metrics["retries_by_cause"] == {"http_503": N}


# Rates summing to 30% over every fault a server may answer better next time (html and 4xx are not).
RATES = {"429": 0.04, "500": 0.03, "503": 0.03, "slow": 0.03, "drop": 0.04, "trickle": 0.03, "malformed": 0.04,
         "empty_choices": 0.03, "null_content": 0.03}  # fmt: skip
SEED = 0  # a plan whose first attempts (the same in every run) hold every kind of fault: asserted below


def test_thirty_percent_faults_write_the_same_bytes_as_a_clean_run(tmp_path, clean_run):
    with FaultServer(RATES, seed=SEED, retry_after="0.05", slow_s=1.5, trickle_s=1.5, max_requests=200,
                     lifetime_s=60) as srv:  # fmt: skip
        m = run_distill(
            _overrides(tmp_path, srv.url, "stage.engine.max_retries=8", "stage.engine.timeout_s=1")
        )
    m = m["generate"]
    assert _samples(tmp_path) == clean_run
    assert {r["fault"] for r in srv.log if r["attempt"] == 0} - {None} == set(RATES)
    assert 0.15 < sum(r["fault"] is not None for r in srv.log) / len(srv.log) < 0.45
    assert m.metrics["give_ups"] == 0 and m.metrics["retries"] == len(srv.log) - LIMIT * N
    assert set(CAUSE.values()) <= set(m.metrics["retries_by_cause"]), m.metrics["retries_by_cause"]
    assert not srv.overflowed and set(FAULTS) >= set(RATES)
