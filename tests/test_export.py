"""The export stage on a small synthetic run (the toy student's weights, hand-made manifests and eval
samples): a movable launch that matches its spec, a self-contained router.yaml, the query router and
LiteLLM config, and a model card parsed back against the manifests. The served bundle is in test_e2e.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TOY, stage_config
from distill.core.io import atomic_write_json, write_rows
from distill.core.manifest import Manifest
from distill.core.paths import Paths
from distill.eval.metrics import problem_scores, summarize

HP = {"epochs": 2.0, "lr": 0.005, "max_length": 384, "packing": True}


def _problem(i: int) -> tuple[str, str, bool, bool]:
    """(text, category, student right?, teacher right?): the student misses long chains, the teacher most."""
    terms = 2 + (i % 2) * 2 + (i % 3 == 0)
    text = (
        "State the final answer to the following arithmetic problem: "
        + " + ".join(str(i % 9 + j) for j in range(terms))
        + " ="
    )
    return text, f"chain_sum-L{1 + i % 2}", terms < 4, terms < 5 or i % 5 != 0


def _samples(name: str, k: int = 4, n: int = 60) -> list[dict]:
    rows = []
    for i in range(n):
        text, cat, s_ok, t_ok = _problem(i)
        ok = t_ok if name == "teacher" else s_ok
        for j in range(k):
            rows.append({"problem_id": f"h{i:03d}", "problem": text, "answer": "1", "meta": {"category": cat},
                         "sample_idx": j, "prompt": text, "completion": "<think>x</think> \\boxed{1}", "reasoning": None,
                         "response": None, "finish_reason": "stop", "prompt_tokens": 30, "completion_tokens": 40 if ok else 60,
                         "teacher": name, "sampling": {}, "pred": "1", "verdict": ok and (j > 0 or i % 7 != 0)})  # fmt: skip
    return rows


def _metrics(rows: list[dict], k: int = 4) -> dict:
    by: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        for cat in ("all", r["meta"]["category"]):
            by.setdefault(cat, {}).setdefault(r["problem_id"], []).append(r)
    out = {}
    for cat in sorted(by):
        groups = list(by[cat].values())
        rs = [r for g in groups for r in g]
        scores = [problem_scores([r["verdict"] for r in g], [r["pred"] for r in g], k) for g in groups]
        out[cat] = summarize(
            scores, [r["completion_tokens"] for r in rs], [False] * len(rs), [r["prompt_tokens"] for r in rs]
        )
    return out


def _manifest(d: Path, stage: str, key: str, **kw) -> None:
    Manifest(stage=stage, key=key, **kw).write(d)


def fake_run(root: Path) -> Path:
    """A run with train (two phases), curate and eval manifests as the real stages write them."""
    run = root / "toy"
    for ph, loss in (("phase1", 0.3), ("phase2", 0.2)):
        _manifest(run / "train" / ph, "train", f"key-{ph}", config={"phase": ph, "strategy": "ddp", "hparams": {**HP, "lr": loss / 60}},
                  outputs={"model": {"path": str(TOY / "student")}}, metrics={"world_size": 2, "global_step": 70, "final_loss": loss})  # fmt: skip
    _manifest(run / "train", "train", "key-train", config={"phases": ["phase1", "phase2"]},
              outputs={"model": {"path": str(TOY / "student")}, "phase1": {"path": str(TOY / "student")}})  # fmt: skip
    gen = [dict(r, problem_id=f"t{r['problem_id']}", teacher="teacher") for r in _samples("teacher", n=40)]
    write_rows(run / "generate" / "samples.jsonl", gen)
    pairs = [
        {"problem_id": r["problem_id"], "pass_rate": 0.75 if "+ 3 +" in r["problem"] else 0.25}
        for r in gen[::4]
    ]
    write_rows(run / "curate" / "phase1.jsonl", pairs)
    write_rows(run / "curate" / "rejected.jsonl", [])
    funnel = {"input": 160, "steps": [{"step": "wrong", "removed": 60, "remaining": 100}, {"step": "duplicate_trace", "removed": 20, "remaining": 80}],
              "kept": 80, "rejected": 80, "phases": {"phase1": 40, "phase2": 30}, "problems": {"input": 40, "kept": 35}, "verdicts": {"true": 100, "false": 60, "none": 0}}  # fmt: skip
    _manifest(run / "curate", "curate", "key-curate", config={}, metrics=funnel,
              inputs=[{"name": "samples", "path": str(run / "generate" / "samples.jsonl"), "sha256": None, "key": "key-gen"}],
              outputs={"phase1": {"path": str(run / "curate" / "phase1.jsonl"), "rows": 40}, "phase2": {"path": str(run / "curate" / "phase1.jsonl"), "rows": 30},
                       "rejected": {"path": str(run / "curate" / "rejected.jsonl"), "rows": 80}})  # fmt: skip
    models = {}
    for name in ("teacher", "phase2"):
        rows = _samples(name)
        write_rows(run / "eval" / name / "samples.jsonl", rows)
        _manifest(run / "eval" / name, f"eval/{name}", f"key-eval-{name}", config={},
                  outputs={"samples": {"path": str(run / "eval" / name / "samples.jsonl"), "rows": len(rows)}})  # fmt: skip
        models[name] = _metrics(rows)
    sampling = {"n": 4, "temperature": 0.8, "top_p": 1.0, "top_k": -1, "max_tokens": 160}
    atomic_write_json(run / "eval" / "metrics.json", {"sampling": sampling, "k": 4, "models": models})
    _manifest(run / "eval", "eval", "key-eval", config={"category_field": "category"},
              outputs={"metrics": {"path": str(run / "eval" / "metrics.json"), "rows": 2}})  # fmt: skip
    return run


def export(root: Path, *overrides: str):
    from distill.export.stage import run

    cfg = stage_config(
        "export",
        [
            "stage=export",
            f"run.root={root}",
            "stage.query_router.folds=3",
            "stage.eval_name=phase2",
            *overrides,
        ],
    )
    paths = Paths.for_run(cfg.run.root, cfg.run.name)
    return run(cfg, paths), paths.stage_dir("export")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("export")
    run = fake_run(root)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        export(root)
    return run, run / "export", buf.getvalue()


def test_launch_is_movable_and_runs_the_spec(exported, tmp_path):
    """serve.sh names no absolute path, binds 127.0.0.1, and, moved elsewhere, execs exactly serve.json's
    command (a stand-in PYTHON prints what it was given)."""
    run, out, stdout = exported
    spec = json.loads((out / "serve.json").read_text())
    script = (out / "serve.sh").read_text()
    assert str(run) not in script and str(run) not in json.dumps(spec)
    assert "vllm serve" not in script and "-m vllm.entrypoints.openai.api_server" in script
    assert spec["host"] == "127.0.0.1" and spec["port"] == 8000 and spec["device"] == "cpu"
    for flag in ("--enforce-eager", "--no-enable-chunked-prefill", "--max-num-batched-tokens"):
        assert flag in spec["args"], flag  # the CPU engine's settings (engines.vllm.llm_kwargs)
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    fake = tmp_path / "fake-python"
    fake.write_text(
        '#!/usr/bin/env bash\necho "cwd=$PWD"\necho "kv=$VLLM_CPU_KVCACHE_SPACE"\nprintf "%s\\n" "$@"\n'
    )
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "VLLM_CPU_KVCACHE_SPACE")}
    got = subprocess.run(["bash", str(moved / "serve.sh"), "--max-num-seqs", "4"], capture_output=True, text=True,
                         env={**env, "PYTHON": str(fake)}, cwd=tmp_path, check=True).stdout.splitlines()  # fmt: skip
    assert got[0] == f"cwd={moved}" and (moved / "model" / "config.json").exists()
    assert got[1] == "kv=1"
    assert got[2:] == ["-m", "vllm.entrypoints.openai.api_server", *spec["args"], "--max-num-seqs", "4"]
    assert spec["command"] == "python -m vllm.entrypoints.openai.api_server " + " ".join(spec["args"])
    # the printed line and the card say the same thing as the spec
    assert spec["usage"] in stdout and spec["usage"] in (out / "model" / "README.md").read_text()


def test_launch_for_gpu_written_on_cpu(tmp_path):
    from omegaconf import OmegaConf

    from distill.export.serve import serve_spec

    x = OmegaConf.merge(
        stage_config("export", ["stage=export", f"run.root={tmp_path}"]).stage, {"device": "gpu"}
    )
    spec = serve_spec(x, "s", 9000, Paths.for_run(str(tmp_path), "toy"))
    assert "--no-enforce-eager" in spec["args"] and "--no-enable-chunked-prefill" not in spec["args"]
    assert "--gpu-memory-utilization" in spec["args"] and spec["env"] == {}
    with pytest.raises(ValueError, match="export.device"):
        serve_spec(OmegaConf.merge(x, {"device": "tpu"}), "s", 9000, Paths.for_run(str(tmp_path), "toy"))


def test_router_yaml_is_self_contained(exported):
    run, out, _ = exported
    doc = yaml.safe_load((out / "router.yaml").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    f, c = doc["tiers"]["frontier"], doc["tiers"]["commodity"]
    assert (f["model"], f["base_url"], f["api_key_env"]) == ("toy-teacher", "http://127.0.0.1:8001/v1", None)
    assert (c["model"], c["base_url"]) == ("toy-student", "http://127.0.0.1:8000/v1")
    assert set(doc["units"]) == {"prices", "tokens", "cost"}
    for tier, name in ((c, "phase2"), (f, "teacher")):
        assert tier["eval_name"] == name and set(tier["prices"]) == {"input_per_mtok", "output_per_mtok"}
        for cat, t in tier["tokens"].items():
            assert t["completion"] == pytest.approx(metrics["models"][name][cat]["mean_tokens"])
    assert sum(doc["traffic"]["weights"].values()) == pytest.approx(1.0)
    for r in doc["routing"]["categories"].values():
        assert r["gap_upper"] == pytest.approx(r["gap"] + doc["routing"]["z"] * r["gap_se"])
        assert r["tier"] == ("commodity" if r["gap_upper"] <= doc["routing"]["margin"] else "frontier")
    assert doc["routing"]["categories"]["chain_sum-L2"]["gap_se"] > 0
    qr = doc["query_router"]
    assert (out / qr["path"]).exists() and (out / qr["litellm_config"]).exists()
    assert qr["held_out"]["problems"] == 60


def test_query_router_json_is_the_one_router_yaml_describes(exported):
    from distill.export.query_router import QueryRouter

    _, out, _ = exported
    text = (out / "query_router.json").read_text()
    json.loads(text)  # JSON, no pickle
    router = QueryRouter.load(out / "query_router.json")
    doc = yaml.safe_load((out / "router.yaml").read_text())
    assert router.threshold == pytest.approx(doc["query_router"]["threshold"])
    report = json.loads((out / "routing.json").read_text())
    assert report["aux_rows"] == 40  # the curate pass rates were used
    assert {"random", "category_rule", "classifier", "oracle"} <= set(report["curve"][0])
    litellm = yaml.safe_load((out / "litellm.yaml").read_text())
    assert {m["model_name"] for m in litellm["model_list"]} == {"commodity", "frontier"}


def _table(card: str, heading: str, first: str) -> list[list[str]]:
    """The rows of the markdown table under `heading` whose header starts with `| first`."""
    section = card.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def check_card(run: Path) -> None:
    """The card's funnel, phases (rows, hyper-parameters), eval table and lineage equal the manifests'.
    Shared with test_e2e, which runs it on the real toy run."""
    out = run / "export"
    card = (out / "model" / "README.md").read_text()
    cur = Manifest.read(run / "curate" / "manifest.json")
    funnel = _table(card, "Data funnel", "step")
    assert funnel[0] == ["input", "0", str(cur.metrics["input"])]
    assert funnel[1:] == [[s["step"], str(s["removed"]), str(s["remaining"])] for s in cur.metrics["steps"]]
    phases = {r[0]: r for r in _table(card, "Curriculum phases", "phase")}
    hps = {r[0]: r[1:] for r in _table(card, "Curriculum phases", "hyper-parameter")}
    names = sorted(p.parent.name for p in (run / "train").glob("*/manifest.json"))
    assert sorted(phases) == names and names
    for i, ph in enumerate(names):
        m = Manifest.read(run / "train" / ph / "manifest.json")
        rows = m.metrics["prompts"] if m.config.get("kind") == "on_policy" else cur.outputs[ph]["rows"]
        assert phases[ph][1].split(" ")[0] == str(rows) and phases[ph][-1] == f"`{m.key}`"
        assert float(phases[ph][5]) == pytest.approx(m.metrics["final_loss"], abs=5e-5)
        assert {k: json.loads(v[i]) for k, v in hps.items()} == m.config["hparams"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    ev = _table(card, "Evaluation", "model")
    assert len(ev) == sum(len(v) for v in metrics["models"].values())
    for row in ev:
        # the card rounds to 3 decimals: off by at most half a unit in the last place (0.3125 -> "0.312")
        assert float(row[2]) == pytest.approx(metrics["models"][row[0]][row[1]]["avg@k"], abs=5e-4 + 1e-12)
    lin = json.loads(card.split("## Lineage", 1)[1].split("```json", 1)[1].split("```", 1)[0])
    for stage in ("curate", "train", "eval"):
        assert lin["stages"][stage]["key"] == Manifest.read(run / stage / "manifest.json").key
    exp = Manifest.read(out / "manifest.json")
    assert lin["weights_sha256"] == exp.outputs["weights_sha256"]["sha256"] and lin["weights_sha256"]
    assert re.search(r"## Query router\n`query_router.json`", card) and "| APGR |" in card


def test_card_parses_back_to_the_manifests(exported):
    check_card(exported[0])


def test_missing_frontier_endpoint_is_named(tmp_path):
    fake_run(tmp_path)
    with pytest.raises(ValueError, match=r"export.frontier: set model and base_url"):
        export(tmp_path, "stage.frontier.base_url=null")
