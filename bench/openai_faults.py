"""The openai backend against each fault of a misbehaving loopback endpoint (tests/fault_server.py).

One row per case: what the engine did (answer / named error), the wall time, and the request count. Runs on
any version of the engine that takes (EngineConfig, ModelRef, paths) and `generate(requests, sampling)`, so
the same script gives the before and after columns:

    PYTHONPATH=$PWD:$PWD/tests .venv/bin/python bench/openai_faults.py

The last line is the ratio of the wait before a retry to the Retry-After the server asked for (goal >= 1).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fault_server import FaultServer  # noqa: E402

from distill.core.config import ModelRef  # noqa: E402
from distill.engines.base import EngineConfig, Request, SamplingConfig  # noqa: E402
from distill.engines.openai import OpenAIEngine  # noqa: E402

os.environ.setdefault("DISTILL_BENCH_KEY", "sk-bench")
BASE = EngineConfig(backend="openai", api_key_env="DISTILL_BENCH_KEY", backoff_s=0.01, timeout_s=0.5)
SAMPLING = SamplingConfig(n=2, max_tokens=16)


def _reqs(k: int) -> list[Request]:
    return [Request(f"p{i}", [{"role": "user", "content": f"problem {i}"}], 2, 1000 * i) for i in range(k)]


def _first(fault: str):
    return lambda body, attempt: fault if attempt == 0 else "ok"


def _always(fault: str):
    return lambda body, attempt: fault


def _poison(fault: str):
    return lambda body, attempt: fault if body["messages"][0]["content"] == "problem 3" else "ok"


def case(name: str, rule, k: int = 4, **kw) -> tuple[FaultServer, str, float]:
    srv_kw = {x: kw.pop(x) for x in ("retry_after", "slow_s", "trickle_s") if x in kw}
    cfg = replace(BASE, **kw)
    with FaultServer(rule=rule, max_requests=200, lifetime_s=30, **srv_kw) as srv:
        cfg = replace(cfg, base_url=srv.url)
        engine = OpenAIEngine(cfg, ModelRef(), None)
        t0 = time.perf_counter()
        try:
            outs = engine.generate(_reqs(k), SAMPLING)
            texts = [c.text for o in outs for c in o]
            empty = sum(t == "" for t in texts)
            got = f"ok: {len(texts)} samples" + (f", {empty} EMPTY written as samples" if empty else "")
        except Exception as e:  # noqa: BLE001 (the point is to show which)
            kept = getattr(e, "outputs", None)
            extra = f" [kept {sum(o is not None for o in kept)}/{k} problems]" if kept is not None else ""
            got = f"{type(e).__name__}: {str(e).splitlines()[0][:150]}{extra}"
        dt = time.perf_counter() - t0
        counters = getattr(engine, "counters", None)
        if counters:
            got += f" | counters {dict(sorted(counters.items()))}"
    print(f"| {name} | {got} | {dt:.2f} s | {len(srv.log)} |", flush=True)
    return srv, got, dt


def _retry_waits(srv: FaultServer) -> list[float]:
    first = {r["seed"]: r["t"] for r in srv.log if r["attempt"] == 0}
    return [r["t"] - first[r["seed"]] for r in srv.log if r["attempt"] == 1]


def main() -> None:
    with FaultServer() as srv:  # first use imports and builds the client: not part of any case's time
        OpenAIEngine(replace(BASE, base_url=srv.url), ModelRef(), None).generate(_reqs(1), SAMPLING)
    print("| case | outcome | wall | requests |\n|---|---|---|---|")
    for f in ("500", "503", "drop", "slow", "malformed", "empty_choices", "null_content"):
        case(f"{f} once per request", _first(f), slow_s=1.0)
    case("null_content always", _always("null_content"), max_retries=1)
    case("html page, status 200, always", _always("html"), max_retries=1)
    case("one problem of 4 always 500 (max_retries=1)", _poison("500"), max_retries=1)
    srv, _, _ = case("429 Retry-After: 0.5 once per request", _first("429"), retry_after="0.5")
    waits = _retry_waits(srv)
    srv2, _, _ = (
        case(
            "429 Retry-After: 30, max_retry_after_s=0.3",
            _first("429"),
            retry_after="30",
            max_retry_after_s=0.3,
        )
        if "max_retry_after_s" in EngineConfig.__dataclass_fields__
        else (None, None, None)
    )
    if srv2 is not None:
        print(f"bounded Retry-After: median wait {statistics.median(_retry_waits(srv2)):.2f} s (max 0.3 s)")
    case("trickled body over 1.5 s at timeout_s=0.5, once per request", _first("trickle"), k=1, trickle_s=1.5)
    print(
        f"Retry-After wait / asked: {statistics.median(waits) / 0.5:.2f} (median of {len(waits)}; goal >= 1.0)"
    )


if __name__ == "__main__":
    main()
