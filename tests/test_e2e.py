"""The whole default pipeline on the toy world, as `python -m distill` runs it; then what it exported.

One run (a session fixture) serves every test here: its rerun must be a no-op, the bundle must load and
stop at EOS, its serve.sh must serve it under concurrent seeded load and behind LiteLLM's Router, the
router.yaml and the card must agree with the manifests, and the student must have learned (the toy
world's proof that distillation works). Its third phase is on-policy (issue 16), what the export ships:
trained on 2 ranks from phase 2's weights, and, in a copy of the run, killed after a checkpoint and resumed.
The run (`toy_run`) and its served bundle (`served`) are conftest's fixtures.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, distill_cmd, output_rows, procs_with, weights

pytestmark = pytest.mark.slow
STAGES = ["generate", "curate", "train", "eval", "export"]
PHASES = ["phase1", "phase2", "onpolicy"]  # experiment=toy: two SFT phases, then on-policy


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


def per_problem(run: Path, model: str) -> dict[str, float]:
    """Eval's avg@k of one model, problem by problem (for paired differences)."""
    out: dict[str, list[bool]] = {}
    for r in output_rows(run / "eval" / model, "samples"):
        out.setdefault(r["problem_id"], []).append(bool(r["verdict"]))
    return {p: sum(v) / len(v) for p, v in out.items()}


def shipped(run: Path) -> str:
    """The phase the export ships (its train input: <run>/train/<phase>/final)."""
    return Path(json.loads((run / "export" / "manifest.json").read_text())["inputs"][0]["path"]).parent.name


def test_distillation_works(toy_run):
    run, _, _ = toy_run
    models = json.loads((run / "eval" / "metrics.json").read_text())["models"]
    assert set(models) == {"teacher", "student", *PHASES}  # eval picked up every phase, on-policy too
    teacher, init = models["teacher"]["all"]["avg@k"], models["student"]["all"]["avg@k"]
    final = models["phase2"]["all"]["avg@k"]
    assert final >= 0.9 * teacher, (teacher, init, final)
    assert final >= init + 0.3, (teacher, init, final)
    # The short on-policy phase keeps what SFT taught: within 3 paired SE of phase 2 (on the toy its gain
    # is within training noise, docs/results.md). A wrong loss or sign at this lr falls through this.
    p2, op = per_problem(run, "phase2"), per_problem(run, "onpolicy")
    d = [op[p] - p2[p] for p in p2]
    se = statistics.stdev(d) / math.sqrt(len(d))
    print(f"[e2e] on-policy - phase 2: {statistics.fmean(d):+.3f} +- {se:.3f} (avg@k, paired)")
    assert statistics.fmean(d) >= -3 * se, (statistics.fmean(d), se)
    assert shipped(run) == PHASES[-1]  # export ships the last phase by default


def test_onpolicy_phase_trained_on_two_ranks_from_phase2(toy_run):
    run = toy_run[0]
    p2, op = run / "train" / "phase2", run / "train" / "onpolicy"
    m = json.loads((run / "train" / "manifest.json").read_text())
    mm = m["metrics"]["onpolicy"]
    assert mm["kind"] == "on_policy" and mm["world_size"] == 2 and mm["global_step"] == mm["max_steps"] == 16
    plan = json.loads((op / "plan.json").read_text())
    assert plan["kind"] == "on_policy" and plan["init_model"] == str(p2 / "final")
    assert Path(plan["on_policy"]["teacher"]).resolve() == (REPO / "data" / "toy" / "teacher").resolve()
    assert plan["on_policy"]["beta"] == 1.0  # reverse KL
    assert m["outputs"]["model"]["path"] == str(op / "final") and m["config"]["phases"] == PHASES
    w2, w3 = weights(p2 / "final"), weights(op / "final")
    assert w2.keys() == w3.keys() and any(not torch.equal(w2[k], w3[k]) for k in w2)
    assert mm["teacher_forward_tokens_per_step"] > mm["student_generated_tokens_per_step"] > 0
    hist = json.loads((op / "train_log.json").read_text())["log_history"]
    losses = [r["loss"] for r in hist if "loss" in r]  # logged every step; that it falls: test_on_policy.py
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)


def test_kill_during_onpolicy_resumes_from_its_checkpoint(toy_run, tmp_path):
    """A copy of the run with phases 1-2 done retrains only the on-policy phase, at lr 0: SIGKILLed after
    its first checkpoint and rerun, it resumes there, and its final weights equal phase 2's, tensor for
    tensor (so it also started from them)."""
    src = toy_run[0]
    root = tmp_path / "r"
    for rel in ("curate", "train/phase1", "train/phase2"):  # up to date in the copy: not retrained
        shutil.copytree(src / rel, root / "toy" / rel, symlinks=True)
    # 8 steps of shorter samples still put a checkpoint (step 2) between start and end
    ov = ["stage=train", f"run.root={root}", "wandb.enabled=false", "stage.save_steps=2",
          "stage.per_phase.onpolicy.lr=0.0", "stage.per_phase.onpolicy.epochs=0.16",
          "stage.per_phase.onpolicy.max_new_tokens=24"]  # fmt: skip
    op = root / "toy" / "train" / "onpolicy"
    proc = subprocess.Popen(distill_cmd(*ov), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not list(op.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, (
            "the phase ended or stalled before a checkpoint"
        )
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while procs_with(str(op / "plan.json")):
        assert time.time() < deadline, "orphaned ranks survived the kill"
        time.sleep(0.2)
    assert not (op / "manifest.json").exists()
    out = subprocess.run(distill_cmd(*ov), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train phase1: up to date" in out.stdout and "train phase2: up to date" in out.stdout
    m = json.loads((op / "manifest.json").read_text())["metrics"]
    assert m["resumed_from"] and 2 <= m["resume_step"] < m["global_step"] == m["max_steps"]
    assert "resuming from" in (op / "ranks.log").read_text()
    w2, w3 = weights(root / "toy" / "train" / "phase2" / "final"), weights(op / "final")
    assert w2.keys() == w3.keys()
    for k in w2:
        assert torch.equal(w2[k], w3[k]), k


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


def test_router_yaml_matches_metrics(toy_run):
    run, _, _ = toy_run
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    doc = yaml.safe_load((run / "export" / "router.yaml").read_text())
    student = metrics["models"][shipped(run)]
    for cat, scores in doc["tiers"]["commodity"]["eval"].items():
        assert scores["avg@k"] == pytest.approx(student[cat]["avg@k"])
    r = doc["routing"]
    for cat, t in r["categories"].items():
        assert t["gap"] == pytest.approx(metrics["models"]["teacher"][cat]["avg@k"] - student[cat]["avg@k"])
        assert t["tier"] == ("commodity" if t["gap"] + r["z"] * t["gap_se"] <= r["margin"] else "frontier")
    costs = doc["policy_costs"]
    assert costs["all_commodity"]["cost_per_query"] < costs["all_frontier"]["cost_per_query"]


def test_card_parses_back_to_the_run(toy_run):
    from test_export import check_card

    check_card(toy_run[0])


def test_serve_sh_under_concurrent_seeded_load(toy_run, served):
    """The held-out problems at eval's sampling settings, k each, half seeded and half not, 16 at a time
    through the openai client: the server survives, reasoning is split from the answer, every finish is
    `stop`, a seeded request repeats exactly, and accuracy is eval's within 3 paired SE."""
    from openai import OpenAI

    from distill.curate.answers import extract_answer
    from distill.curate.verify import Verifier

    run, (url, _, proc, log) = toy_run[0], served
    spec = json.loads((run / "export" / "serve.json").read_text())
    rows = output_rows(run / "eval" / shipped(run), "samples")  # eval's samples of the served model
    probs = list({r["problem_id"]: r for r in rows}.values())
    sampling = json.loads((run / "eval" / "metrics.json").read_text())["sampling"]
    client = OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=300)

    def ask(i: int):
        seed = {"seed": 1000 + i} if i % 2 == 0 else {}
        return client.chat.completions.create(
            model=spec["served_model_name"], messages=[{"role": "user", "content": probs[i]["prompt"]}],
            n=sampling["n"], temperature=sampling["temperature"], top_p=sampling["top_p"], max_tokens=448, **seed,
        )  # fmt: skip

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(len(probs))))
    assert proc.poll() is None, log.read_text()[-3000:]
    choices = [(i, c) for i, r in enumerate(replies) for c in r.choices]
    assert {c.finish_reason for _, c in choices} == {"stop"}
    # The parser ran on every choice: without it reasoning is None and the whole tagged text lands in
    # content. A toy student may still open a second <think> after its first </think>; that is its own
    # output (eval scores the same text), so only the split itself is asserted.
    for _, c in choices:
        thought = (c.message.reasoning or "").strip()
        assert thought and (len(thought) < 8 or thought not in (c.message.content or "")), c.message
    assert [c.message.content for c in ask(0).choices] == [c.message.content for c in replies[0].choices]
    pairs = [(probs[i]["answer"], extract_answer(f"<think>{c.message.reasoning}</think>{c.message.content}",
                                                 ["boxed"], require_think=True).answer) for i, c in choices]  # fmt: skip
    served_acc = [0.0] * len(probs)
    for (i, _), ok in zip(choices, Verifier(1).verdicts(pairs), strict=True):
        served_acc[i] += bool(ok) / sampling["n"]
    by_pid: dict[str, list[bool]] = {}
    for r in rows:
        by_pid.setdefault(r["problem_id"], []).append(bool(r["verdict"]))
    d = [
        s - sum(by_pid[p["problem_id"]]) / len(by_pid[p["problem_id"]])
        for s, p in zip(served_acc, probs, strict=True)
    ]
    se = statistics.stdev(d) / math.sqrt(len(d))
    print(
        f"[e2e] served avg@k {statistics.fmean(served_acc):.3f}, minus eval's {statistics.fmean(d):+.3f} (SE {se:.3f})"
    )
    assert abs(statistics.fmean(d)) <= 3 * se + 1e-9


def test_litellm_router_from_the_export_reaches_the_bundle(toy_run, served, monkeypatch):
    """LiteLLM's Router, built from litellm.yaml (only the port is the test server's), takes the tier the
    query router names and gets an answer from the served bundle, priced at the file's prices."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: the bundled price map
    import litellm

    from distill.export.query_router import QueryRouter

    out, (url, *_) = toy_run[0] / "export", served
    cfg = yaml.safe_load((out / "litellm.yaml").read_text())
    for m in cfg["model_list"]:
        if m["model_name"] == "commodity":
            m["litellm_params"]["api_base"] = url
    router = litellm.Router(model_list=cfg["model_list"], **cfg["router_settings"])
    qr = QueryRouter.load(out / "query_router.json")
    rows = output_rows(out.parent / "eval" / shipped(out.parent), "samples")
    prompts = list({r["problem_id"]: r["prompt"] for r in rows}.values())
    tiers = [qr.route_messages([{"role": "user", "content": t}]) for t in prompts]
    assert set(tiers) == {"commodity", "frontier"}  # it routes per query, both ways
    text = prompts[tiers.index("commodity")]
    reply = router.completion(
        model="commodity", messages=[{"role": "user", "content": text}], max_tokens=200, temperature=0
    )
    assert "\\boxed{" in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    p = next(m["litellm_params"] for m in cfg["model_list"] if m["model_name"] == "commodity")
    u = reply.usage
    expect = u.prompt_tokens * p["input_cost_per_token"] + u.completion_tokens * p["output_cost_per_token"]
    assert reply._hidden_params["model_id"] == "commodity-toy-student"  # LiteLLM's documented cost field
    assert reply._hidden_params["response_cost"] == pytest.approx(expect, rel=1e-6)


def test_curated_toy_world_has_two_nonempty_phases(toy_run):
    run, _, _ = toy_run
    cur = json.loads((run / "curate" / "manifest.json").read_text())
    rows = {name: out["rows"] for name, out in cur["outputs"].items() if name.startswith("phase")}
    assert rows.get("phase1", 0) > 0 and rows.get("phase2", 0) > 0, rows
    gen_rows = json.loads((run / "generate" / "manifest.json").read_text())["outputs"]["samples"]["rows"]
    kept = len({(r["problem_id"], r["sample_idx"]) for p in ("phase1", "phase2")
                for r in output_rows(run / "curate", p)})  # fmt: skip
    rejected = len(output_rows(run / "curate", "rejected"))
    assert kept + rejected == gen_rows  # every generated sample ends up kept or rejected, once


def test_wandb_group_and_artifact_lineage(toy_run):
    """Every producing stage logged its outputs as an artifact (offline), each naming its inputs' keys."""
    run, _, _ = toy_run
    reg = json.loads((run / "wandb" / "artifacts.json").read_text())
    keys = {
        s: json.loads((run / s / "manifest.json").read_text())["key"]
        for s in ("generate", "curate", "export")
    }
    phases = {p: json.loads((run / "train" / p / "manifest.json").read_text())["key"] for p in PHASES}
    assert reg == {
        keys["generate"]: "toy-generate",
        keys["curate"]: "toy-curate",
        **{phases[p]: f"toy-{p}" for p in PHASES},
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
    assert phases["phase2"].encode() in log_of("toy-onpolicy", phases["onpolicy"])
    assert not any(keys["generate"].encode() in b for b in logs.values() if b"toy-phase1" in b)


def test_verify_walks_the_whole_chain_and_catches_an_edit_in_every_kind_of_output(toy_run, tmp_path):
    """A copy of the run verifies clean; a one-byte edit in each kind of output is named (issue 14)."""

    from distill.core.lineage import verify

    run, _, _ = toy_run
    copy = tmp_path / "toy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    ok = subprocess.run(
        [*distill_cmd("verify", f"run.root={tmp_path}")], cwd=REPO, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[1].startswith("export ") and "<- problems" in ok.stdout
    kinds = ["generate/parts/*/shard-00000-*.parquet", "curate/parts/*/phase2/unit-00000.parquet",
             "curate/parts/*/rejected/unit-00000.parquet", "train/phase2/final/model.safetensors",
             "train/phase1/train_log.json", "eval/metrics.json", "eval/teacher/samples/part-00000.parquet",
             "export/model/chat_template.jinja", "export/model/config.json", "export/model/tokenizer.json",
             "export/serve.json", "export/router.yaml", "export/serve.sh", "export/model/README.md"]  # fmt: skip
    for rel in kinds:
        f = next(copy.glob(rel))
        before = f.read_bytes()
        f.write_bytes(before[:-2] + bytes([before[-2] ^ 1]) + before[-1:])
        report, _ = verify(copy)
        name = f.name
        assert any(name in p for ps in report.problems.values() for p in ps), (rel, report.problems)
        f.write_bytes(before)


def test_console_is_quiet_and_every_log_is_kept(toy_run):
    """Issue 18: our progress and tables on the console, the libraries' lines in each stage's stage.log."""
    run, console, _ = toy_run
    # Lines on a terminal: a progress bar redraws its one line (text=True turned its \r into \n).
    bar = re.compile(r"^(.*?): +\d+%\|.*\| *\d+/\d+ \[")
    bars = {m.group(1) for line in console.splitlines() if (m := bar.match(line.strip()))}
    lines = sum(1 for line in console.splitlines() if not bar.match(line.strip())) + len(bars)
    assert lines < 150 and len(bars) >= 11, (lines, bars)  # generate, curate x2, train x3, eval x5
    for noise in ("pid=", "{'loss':", "Loading safetensors", "NUMA binding", "FutureWarning"):
        assert noise not in console, noise
    assert "train phase1" in console and "loss=" in console  # the ranks' progress bar
    gen_log = (run / "generate" / "stage.log").read_text()
    assert re.search(r"^\S+ \S+ INFO vllm\.", gen_log, re.M), gen_log[:2000]  # vLLM's own log lines, kept
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
    assert len(pics) == 8, pics  # funnel, 4 train curves (3 phases + all), avg@k, lengths, routing curve
    for rel in pics:
        valid_png((run / rel).read_bytes())
    assert (run / "report.html").read_text().count("data:image/png;base64,") == len(pics)
