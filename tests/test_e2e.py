"""The whole default pipeline on the toy world, as `python -m distill` runs it; then what it exported.

One run (a session fixture) serves every test here: its rerun must be a no-op, the bundle must load and
stop at EOS, a real vLLM server must serve it, the router entry must agree with the eval, and the
student must have learned (the toy world's proof that distillation works).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO, distill_cmd, free_port, start_vllm_server

pytestmark = pytest.mark.slow
STAGES = ["generate", "curate", "train", "eval", "export"]


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> tuple[Path, str, float]:
    root = tmp_path_factory.mktemp("e2e")
    t0 = time.monotonic()
    out = subprocess.run(
        distill_cmd(f"run.root={root}"), cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return root / "toy", out.stdout + out.stderr, wall  # what the user's console showed


def test_pipeline_ran_every_stage_within_budget(toy_run):
    run, stdout, wall = toy_run
    for stage in STAGES:
        m = json.loads((run / stage / "manifest.json").read_text())
        assert m["stage"] == stage and m["key"]
    assert "eval (held-out)" in stdout and "bundle at" in stdout
    assert wall < 600, f"the toy pipeline took {wall:.0f}s (> 10 min)"


def test_rerun_is_a_noop(toy_run):
    run, _, _ = toy_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("manifest.json")}
    out = subprocess.run(
        distill_cmd(f"run.root={run.parent}"), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("up to date") >= len(STAGES)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("manifest.json")} == before


def test_distillation_works(toy_run):
    run, _, _ = toy_run
    models = json.loads((run / "eval" / "metrics.json").read_text())["models"]
    teacher, init = models["teacher"]["all"]["avg@k"], models["student"]["all"]["avg@k"]
    final = models["phase2"]["all"]["avg@k"]
    assert final >= 0.9 * teacher, (teacher, init, final)
    assert final >= init + 0.3, (teacher, init, final)


def test_bundle_loads_and_stops_at_eos(toy_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bundle = toy_run[0] / "export" / "model"
    tok = AutoTokenizer.from_pretrained(bundle)
    model = AutoModelForCausalLM.from_pretrained(bundle, use_safetensors=True)
    gen = json.loads((bundle / "generation_config.json").read_text())
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert gen["eos_token_id"][0] == eot and tok.pad_token_id != eot
    msgs = [{"role": "user", "content": "State the final answer to the following arithmetic problem: 3 + 4 =\n"
             "Please reason step by step, and put your final answer within \\boxed{}."}]  # fmt: skip
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=200, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    assert eot in new, "the exported student never emitted its end-of-turn token"
    assert "</think>" in tok.decode(new)


def test_router_entry_matches_metrics(toy_run):
    run, _, _ = toy_run
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    entry = yaml.safe_load((run / "export" / "router.yaml").read_text())["commodity"]
    student = metrics["models"]["phase2"]
    teacher = metrics["models"]["teacher"]
    for cat, scores in entry["eval"].items():
        assert scores["avg@k"] == pytest.approx(student[cat]["avg@k"])
    margin = entry["routing"]["margin"]
    for cat, r in entry["routing"]["categories"].items():
        expect = "commodity" if student[cat]["avg@k"] >= teacher[cat]["avg@k"] - margin else "frontier"
        assert r["tier"] == expect
    costs = entry["policy_costs"]
    assert costs["all_commodity"]["cost_per_query"] < costs["all_frontier"]["cost_per_query"]
    lo, hi = sorted([costs["all_commodity"]["accuracy"], costs["all_frontier"]["accuracy"]])
    assert lo - 1e-9 <= costs["routed"]["accuracy"] <= max(hi, lo) + 1e-9 or costs["routed"]["accuracy"] >= lo


def test_vllm_serves_the_bundle(toy_run):
    run, _, _ = toy_run
    spec = json.loads((run / "export" / "serve.json").read_text())
    port = free_port()
    with start_vllm_server(spec["args"], port) as url:
        body = {
            "model": spec["served_model_name"],
            "messages": [{"role": "user", "content": "State the final answer to the following arithmetic problem: "
                          "5 + 2 =\nPlease reason step by step, and put your final answer within \\boxed{}."}],
            "max_tokens": 200, "temperature": 0,
        }  # fmt: skip
        req = urllib.request.Request(
            f"{url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
    msg = reply["choices"][0]["message"]
    assert "\\boxed{" in (msg.get("content") or ""), msg
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_curated_toy_world_has_two_nonempty_phases(toy_run):
    run, _, _ = toy_run
    cur = json.loads((run / "curate" / "manifest.json").read_text())
    rows = {name: out["rows"] for name, out in cur["outputs"].items() if name.startswith("phase")}
    assert rows.get("phase1", 0) > 0 and rows.get("phase2", 0) > 0, rows
    gen_rows = json.loads((run / "generate" / "manifest.json").read_text())["outputs"]["samples"]["rows"]
    kept = len({(r["problem_id"], r["sample_idx"]) for p in ("phase1", "phase2")
                for r in map(json.loads, (run / "curate" / f"{p}.jsonl").read_text().splitlines())})  # fmt: skip
    rejected = len((run / "curate" / "rejected.jsonl").read_text().splitlines())
    assert kept + rejected == gen_rows  # every generated sample ends up kept or rejected, once


def test_wandb_group_and_artifact_lineage(toy_run):
    """Every producing stage logged its outputs as an artifact (offline), each naming its inputs' keys."""
    run, _, _ = toy_run
    reg = json.loads((run / "wandb" / "artifacts.json").read_text())
    keys = {
        s: json.loads((run / s / "manifest.json").read_text())["key"]
        for s in ("generate", "curate", "export")
    }
    phases = {
        p: json.loads((run / "train" / p / "manifest.json").read_text())["key"] for p in ("phase1", "phase2")
    }
    assert reg == {
        keys["generate"]: "toy-generate",
        keys["curate"]: "toy-curate",
        phases["phase1"]: "toy-phase1",
        phases["phase2"]: "toy-phase2",
        keys["export"]: "toy-export",
    }
    logs = {p: p.read_bytes() for p in (run / "wandb").glob("offline-run-*/run-*.wandb")}

    def log_of(artifact: str, key: str) -> bytes:
        found = [b for b in logs.values() if artifact.encode() in b and f"key-{key}".encode() in b]
        assert len(found) == 1, f"{artifact} (key {key}) logged {len(found)} times"
        return found[0]

    # Lineage: curate's artifact names generate's key as an input, phase 2's names phase 1's.
    assert keys["generate"].encode() in log_of("toy-curate", keys["curate"])
    assert phases["phase1"].encode() in log_of("toy-phase2", phases["phase2"])
    assert not any(keys["generate"].encode() in b for b in logs.values() if b"toy-phase1" in b)


def test_console_is_quiet_and_every_log_is_kept(toy_run):
    """Issue 18: our progress and tables on the console, the libraries' lines in each stage's stage.log."""
    run, console, _ = toy_run
    lines = console.splitlines()
    assert len(lines) < 150, f"{len(lines)} console lines"
    for noise in ("pid=", "{'loss':", "Loading safetensors", "NUMA binding", "FutureWarning"):
        assert noise not in console, noise
    assert "train phase1" in console and "loss=" in console  # the ranks' progress bar
    gen_log = (run / "generate" / "stage.log").read_text()
    assert "Initializing a V1 LLM engine" in gen_log  # vLLM's start-up, kept
    assert "{'loss':" in (run / "train" / "phase1" / "ranks.log").read_text()
    assert f"report {run / 'report.md'}" in console


def test_report_has_every_section_and_valid_pictures(toy_run):
    from test_run_report import section, table_rows, valid_png

    run, _, _ = toy_run
    md = (run / "report.md").read_text()
    for title in (
        "What ran",
        "Curate funnel",
        "Training",
        "Eval (held-out)",
        "Serving bundle",
        "Router",
        "Lineage",
    ):
        section(md, title)
    ran = {r[0]: r for r in table_rows(section(md, "What ran"))}
    for stage in STAGES:
        assert ran[stage][1:3] == ["done", json.loads((run / stage / "manifest.json").read_text())["key"]]
    pics = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(pics) == 6, pics
    for rel in pics:
        valid_png((run / rel).read_bytes())
    assert (run / "report.html").read_text().count("data:image/png;base64,") == len(pics)
