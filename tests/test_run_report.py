"""The run report against the manifests of a small fake run: every section says what the manifests say,
and every picture it references exists and is a valid PNG (inline in the HTML, by path in the Markdown)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from distill.core.io import write_rows
from distill.core.manifest import Manifest
from distill.core.paths import Paths

VERSIONS = {"git": "0123456789abcdef0123", "torch": "2.13.0"}
CATS = ("add", "mul")


def _m(directory: Path, **kw) -> Manifest:
    m = Manifest(versions=dict(VERSIONS), **kw)
    m.write(directory)
    return m


def _samples(model: str, acc: dict[str, float]) -> list[dict]:
    rows = []
    for p in range(12):
        cat = CATS[p % 2]
        for i in range(4):
            rows.append({"problem_id": f"p{p}", "sample_idx": i, "verdict": None if (p, i) == (0, 3) else (p * 4 + i) % 10 < 10 * acc[cat],
                         "pred": "1", "completion_tokens": 20 + 3 * i + p + (30 if model == "teacher" else 0),
                         "finish_reason": "stop", "prompt_tokens": 12, "meta": {"category": cat}})  # fmt: skip
    return rows


def build_run(run: Path) -> dict[str, Manifest]:
    from distill.curate.funnel import funnel, plot_funnel
    from distill.eval.stage import score_rows
    from distill.export.router import Price, policy_costs, routing_table

    ms = {}
    src = {"name": "train", "path": "data/train.jsonl", "sha256": "ab" * 32, "key": "srckey0000000001"}
    ms["generate"] = _m(run / "generate", stage="generate", key="genkey0000000001", config={"sampling": {"n": 4}},
                        inputs=[src], outputs={"samples": {"path": str(run / "generate/samples.jsonl"), "rows": 48}},
                        metrics={"rows": 48}, timings={"total_s": 3.5}, created="2026-01-01T00:00:01Z")  # fmt: skip
    fun = funnel(48, ["wrong"] * 10 + ["duplicate_trace"] * 3 + [None] * 35, {"phase1": 35, "phase2": 20}, {})
    (run / "curate").mkdir(parents=True)
    plot_funnel(fun, run / "curate" / "funnel.png")
    ms["curate"] = _m(run / "curate", stage="curate", key="curkey0000000001", config={"dedup": {"shingle": 5}},
                      inputs=[{"name": "samples", "path": "x", "sha256": None, "key": "genkey0000000001"}],
                      outputs={"phase1": {"path": str(run / "curate/phase1.jsonl"), "rows": 35},
                               "funnel_plot": {"path": str(run / "curate/funnel.png")}},
                      metrics=fun, timings={"total_s": 1.25}, created="2026-01-01T00:00:02Z")  # fmt: skip
    phases = {}
    for j, phase in enumerate(("phase1", "phase2")):
        d = run / "train" / phase
        d.mkdir(parents=True)
        hist = [{"loss": 3.0 / (s + j * 20), "learning_rate": 1e-3 * (1 - s / 25), "step": s, "epoch": s / 20}
                for s in range(1, 21, 2)] + [{"train_runtime": 9.0, "step": 20}]  # fmt: skip
        (d / "train_log.json").write_text(json.dumps({"log_history": hist}))
        metrics = {"global_step": 20, "first_loss": hist[0]["loss"], "final_loss": hist[-2]["loss"],
                   "tokens_per_s": 1234.5 + j, "train_runtime_s": 9.0, "world_size": 2}  # fmt: skip
        phases[phase] = _m(d, stage="train", key=f"trainkey{phase}00", config={"phase": phase},
                           outputs={"model": {"path": str(d / "final")}, "log": {"path": str(d / "train_log.json")}},
                           metrics=metrics, created="2026-01-01T00:00:03Z")  # fmt: skip
    ms["train"] = _m(run / "train", stage="train", key="trainkey00000001", config={"phases": list(phases)},
                     inputs=[{"name": p, "path": str(run / "train" / p), "key": m.key} for p, m in phases.items()],
                     outputs={"model": {"path": str(run / "train/phase2/final")}},
                     metrics={p: m.metrics for p, m in phases.items()}, timings={"total_s": 20.0},
                     created="2026-01-01T00:00:04Z")  # fmt: skip
    e = OmegaConf.create({"sampling": {"n": 4}, "category_field": "category"})
    results, inputs = (
        {},
        [{"name": "heldout", "path": "data/heldout.jsonl", "sha256": "cd" * 32, "key": "heldkey000000001"}],
    )
    for name, acc in (("teacher", {"add": 0.9, "mul": 0.6}), ("phase2", {"add": 0.8, "mul": 0.3})):
        d = run / "eval" / name
        rows = _samples(name, acc)
        write_rows(d / "samples.jsonl", rows)
        results[name] = score_rows(rows, e)
        mm = _m(d, stage=f"eval/{name}", key=f"evalkey{name:0>9}", config={},
                outputs={"samples": {"path": str(d / "samples.jsonl"), "rows": len(rows)}}, metrics=results[name])  # fmt: skip
        inputs.append({"name": name, "path": str(d / "manifest.json"), "sha256": None, "key": mm.key})
    (run / "eval" / "metrics.json").write_text(
        json.dumps({"sampling": {"temperature": 0.8}, "k": 4, "models": results})
    )
    ms["eval"] = _m(run / "eval", stage="eval", key="evalkey000000001", config={"category_field": "category"},
                    inputs=inputs, outputs={"metrics": {"path": str(run / "eval/metrics.json")}},
                    metrics={n: r["all"] for n, r in results.items()}, created="2026-01-01T00:00:05Z")  # fmt: skip
    s_cat = {c: v for c, v in results["phase2"].items() if c != "all"}
    f_cat = {c: v for c, v in results["teacher"].items() if c != "all"}
    table = routing_table(s_cat, f_cat, 0.1)
    prices = {"commodity": Price(0.1, 0.4), "frontier": Price(3.0, 15.0)}
    entry = {"routing": {"categories": table}, "policy_costs": policy_costs(s_cat, f_cat, table, prices)}
    (run / "export").mkdir()
    (run / "export" / "router.yaml").write_text(yaml.safe_dump({"format": "distill.router/v1", **entry}))
    curve = [{"frontier_share": s, "random": 0.4 + 0.1 * s, "category_rule": 0.41 + 0.1 * s,
              "classifier": 0.42 + 0.12 * s, "oracle": 0.5} for s in (0.0, 0.5, 1.0)]  # fmt: skip
    (run / "export" / "routing.json").write_text(json.dumps({"curve": curve}))
    cmd = f"vllm serve {run}/export/model --served-model-name toy-student --max-model-len 512"
    (run / "export" / "serve.json").write_text(
        json.dumps({"command": cmd, "served_model_name": "toy-student"})
    )
    ms["export"] = _m(run / "export", stage="export", key="expkey0000000001", config={"stage": {}},
                      inputs=[{"name": "train", "path": "x", "sha256": None, "key": ms["train"].key},
                              {"name": "eval", "path": "y", "sha256": None, "key": ms["eval"].key}],
                      outputs={"bundle": {"path": str(run / "export/model")}, "serve": {"path": str(run / "export/serve.json")},
                               "router": {"path": str(run / "export/router.yaml")},
                               "routing": {"path": str(run / "export/routing.json")}},
                      created="2026-01-01T00:00:06Z")  # fmt: skip
    return ms


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from distill.core.run_report import write_report

    run = tmp_path_factory.mktemp("report") / "toy"
    ms = build_run(run)
    paths = Paths(base=run.parent, run_dir=run)
    write_report(paths, None, ["run.root=/tmp/x", "stage.epochs=2"])
    return run, ms, (run / "report.md").read_text(), (run / "report.html").read_text()


def section(md: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    assert m, f"no section {title!r}"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]


def test_what_ran_names_every_stage_key_time_and_code_version(report):
    _, ms, md, _ = report
    rows = {r[0]: r for r in table_rows(section(md, "What ran"))}
    for s, m in ms.items():
        assert rows[s][1:5] == ["done", m.key, m.created, VERSIONS["git"][:12]], rows[s]
    assert "`python -m distill run.root=/tmp/x stage.epochs=2`" in md
    assert "<summary>train config</summary>" in md and "phase2" in section(md, "What ran")


def test_funnel_section_matches_curate_manifest(report):
    _, ms, md, _ = report
    f = ms["curate"].metrics
    rows = {r[0]: r for r in table_rows(section(md, "Curate funnel"))}
    assert rows["input"][2] == str(f["input"]) and rows["kept"][2] == str(f["kept"])
    for s in f["steps"]:
        if s["removed"]:
            assert rows[s["step"]][1:] == [f"-{s['removed']}", str(s["remaining"])]
    assert (
        rows["phase phase2"][2] == "20" and "unencodable_text" not in rows
    )  # steps that removed nothing: left out
    assert "](curate/funnel.png)" in section(md, "Curate funnel")


def test_training_section_matches_phase_metrics_and_has_curves(report):
    _, ms, md, _ = report
    sec = section(md, "Training")
    rows = {r[0]: r for r in table_rows(sec)}
    for phase, m in ms["train"].metrics.items():
        assert rows[phase][1:4] == ["20", f"{m['first_loss']:.4g}", f"{m['final_loss']:.4g}"]
        assert f"](train/plots/loss_{phase}.png)" in sec
    assert "](train/plots/loss_all_phases.png)" in sec


def test_eval_table_and_error_bars_match_the_eval_scores(report):
    from distill.core.plots import avg_at_k_by_category

    run, _, md, _ = report
    metrics = json.loads((run / "eval" / "metrics.json").read_text())["models"]
    rows = {(r[0], r[1]): r for r in table_rows(section(md, "Eval (held-out)"))}
    for name, by_cat in metrics.items():
        samples = [json.loads(x) for x in (run / "eval" / name / "samples.jsonl").read_text().splitlines()]
        plotted = avg_at_k_by_category(samples, "category")
        assert set(plotted) == set(by_cat)
        for cat, s in by_cat.items():
            assert rows[(name, cat)][2] == f"{s['avg@k']:.4g}"
            assert plotted[cat][0] == pytest.approx(s["avg@k"])  # the chart's bars are the table's numbers
            assert plotted[cat][2] == s["problems"] and plotted[cat][1] > 0
    sec = section(md, "Eval (held-out)")
    assert "](eval/plots/avg_at_k.png)" in sec and "](eval/plots/completion_lengths.png)" in sec


def test_bundle_launch_command_and_router_costs(report):
    run, ms, md, _ = report
    assert f"`{ms['export'].outputs['bundle']['path']}`" in section(md, "Serving bundle")
    assert json.loads((run / "export" / "serve.json").read_text())["command"] in section(md, "Serving bundle")
    entry = yaml.safe_load((run / "export" / "router.yaml").read_text())
    assert (run / "export" / "plots" / "routing_curve.png").name in section(md, "Serving bundle") + md
    rows = {r[0]: r for r in table_rows(section(md, "Router"))}
    for policy, c in entry["policy_costs"].items():
        assert rows[policy][1:4] == [
            f"{c['cost_per_query']:.4g}",
            f"{c['accuracy']:.4g}",
            f"{c['cost_per_correct']:.4g}",
        ]
    for cat, r in entry["routing"]["categories"].items():
        assert rows[cat][1] == r["tier"]


def test_lineage_lists_every_input_key_of_every_stage(report):
    _, ms, md, _ = report
    rows = table_rows(section(md, "Lineage"))
    got = {(r[0], r[1], r[3]) for r in rows}
    for s, m in ms.items():
        for i in m.inputs:
            assert (s, m.key, i["key"]) in got, (s, i)


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def valid_png(data: bytes) -> None:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.verify()
    assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def test_every_picture_exists_and_is_a_valid_png(report):
    run, _, md, page = report
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(linked) == 7  # funnel, 2 phase curves + all phases, avg@k, lengths, routing curve
    for rel in linked:
        valid_png((run / rel).read_bytes())
    parser = _Imgs()
    parser.feed(page)
    assert len(parser.srcs) == len(linked)
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        valid_png(base64.b64decode(src.split(",", 1)[1]))


def test_a_partial_run_reports_what_finished_and_pictures_redraw_only_when_stale(tmp_path):
    from distill.core.plots import stage_pictures
    from distill.core.run_report import write_report

    run = tmp_path / "toy"
    build_run(run)
    for s in ("eval", "export"):
        (run / s / "manifest.json").unlink()
    paths = Paths(base=tmp_path, run_dir=run)
    md = (write_report(paths)).read_text()
    rows = {r[0]: r for r in table_rows(section(md, "What ran"))}
    assert rows["eval"][1] == "not run" and rows["export"][1] == "not run" and rows["train"][1] == "done"
    assert "## Eval" not in md and "## Router" not in md
    first = {p: p.stat().st_mtime_ns for p in stage_pictures(None, paths, "train")}
    assert {
        p: p.stat().st_mtime_ns for p in stage_pictures(None, paths, "train")
    } == first  # fresh: not redrawn
    (run / "train" / "plots" / "loss_all_phases.png").unlink()
    assert (run / "train" / "plots" / "loss_all_phases.png") in stage_pictures(None, paths, "train")
