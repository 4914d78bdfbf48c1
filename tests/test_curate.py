"""The curate stage end to end on synthetic samples: the funnel adds up, every row lands once, outputs."""

from __future__ import annotations

import json
import re

import pytest

from conftest import output_rows, run_distill
from distill.core.io import read_rows, write_rows
from distill.core.manifest import Manifest
from distill.core.schemas import REJECTED, SAMPLE, TRAIN_PAIR, RowError

PROMPT = "{p}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def sample(pid: str, problem: str, answer: str | None, idx: int, completion: str, **kw) -> dict:
    row = {
        "problem_id": pid,
        "problem": problem,
        "answer": answer,
        "meta": {"level": 1 if int(pid[1:]) % 2 else 2, "category": "t", "split": "train"},
        "sample_idx": idx,
        "prompt": PROMPT.format(p=problem),
        "completion": completion,
        "reasoning": None,
        "response": None,
        "finish_reason": "stop",
        "prompt_tokens": 12,
        "completion_tokens": len(completion.split()) + 1,
        "teacher": "fake",
        "sampling": {"n": 4},
    }
    return row | kw


def good(ans: str, i: int = 0) -> str:
    return f"<think>\nstep {i}: compute it, get {ans}\n</think>\n\nThe answer is \\boxed{{{ans}}}."


def world(tmp_path) -> tuple[list[dict], dict]:
    """Samples with one planted case per funnel step; returns (rows, expected reason per (pid, idx))."""
    rows, expect = [], {}

    def add(pid, problem, answer, completions, reasons, **kw):
        for i, (c, why) in enumerate(zip(completions, reasons, strict=True)):
            rows.append(sample(pid, problem, answer, i, c, **kw))
            expect[(pid, i)] = why

    add(
        "p1",
        "What is 3 + 4?",
        "7",
        [good("7", 0), good("7", 1), good("8"), good("7", 0)],
        [None, None, "wrong", "duplicate_trace"],
    )
    add(
        "p3",
        "Compute the sum of 10 and 25.",
        "35",
        [good("35", i) for i in range(4)],
        [None] * 3 + ["over_k"],
    )
    add("p5", "  compute THE sum of 10, and 25;", "35", [good("35")], ["duplicate_problem"])
    add("p7", "What is 12 times 12 minus 3?", "\\frac{", [good("141")], ["unverified"])
    add(
        "p9",
        "Is there an answer here at all?",
        "2",
        ["<think>\nhmm\n</think>\n\nNo idea.", "<think>\nloop", "", good("2")],
        ["no_answer", "bad_think", "invalid_text", None],
    )
    add(
        "p11",
        "Find the area of a unit square in square units.",
        "1",
        [good("1") + " " + "and again and again and again " * 20, good("1", 3)],
        ["repetition", None],
    )
    add(
        "p13",
        "A heldout problem copied into the train set, with punctuation.",
        "5",
        [good("5")],
        ["contaminated"],
    )
    rows.append(sample("p15", "Trunc?", "1", 0, "<think>\n1 1 1", finish_reason="length"))
    expect[("p15", 0)] = "truncated"
    heldout = [
        {
            "id": "h1",
            "problem": "a HELDOUT problem copied   into the train set with punctuation",
            "answer": "5",
        }
    ]
    write_rows(tmp_path / "heldout.jsonl", heldout)
    return rows, expect


def write_generate(tmp_path, rows, run="t"):
    gdir = tmp_path / "runs" / run / "generate"
    write_rows(gdir / "samples.jsonl", rows, SAMPLE)
    Manifest("generate", "genkey", {}, outputs={"samples": {"path": str(gdir / "samples.jsonl")}}).write(gdir)


def overrides(tmp_path, *extra) -> list[str]:
    return [
        "stage=curate",
        f"run.root={tmp_path / 'runs'}",
        "run.name=t",
        f"data.heldout.path={tmp_path / 'heldout.jsonl'}",
        "stage.progress=false",
        "stage.verify.num_workers=2",
        "stage.dedup.max_per_problem=3",
        "stage.filters.max_repetition=0.3",
        "stage.filters.repetition_ngram=4",
        "stage.decontam.ngram=8",
        "+stage.phases=[{name: phase1, by: all}, {name: phase2, by: difficulty, max: 0.75}]",
        *extra,
    ]


def test_funnel_adds_up_and_every_row_lands_once(tmp_path, capsys):
    rows, expect = world(tmp_path)
    write_generate(tmp_path, rows)
    m = run_distill(overrides(tmp_path))["curate"]
    out = tmp_path / "runs" / "t" / "curate"
    rejected = list(output_rows(out, "rejected", REJECTED))
    got = {(r["problem_id"], r["sample_idx"]): r["reject_reason"] for r in rejected}
    kept = {(r["problem_id"], r["sample_idx"]) for r in output_rows(out, "phase1", TRAIN_PAIR)}
    assert set(got) | kept == set(expect) and not set(got) & kept
    assert got == {k: v for k, v in expect.items() if v is not None}
    f = json.loads((out / "funnel.json").read_text())
    assert f["input"] == len(rows) == f["kept"] + f["rejected"]
    assert f["steps"][-1]["remaining"] == f["kept"] == len(kept)
    assert sum(s["removed"] for s in f["steps"]) == f["rejected"]
    assert (
        f["contaminated_problems"][0]["problem_id"] == "p13"
        and f["contaminated_problems"][0]["eval_id"] == "h1"
    )
    assert f["unparseable_reference_problems"] == 1
    assert m.metrics["kept"] == f["kept"] and (out / "funnel.png").stat().st_size > 1000
    p2 = list(output_rows(out, "phase2", TRAIN_PAIR))
    assert p2 and all(r["pass_rate"] <= 0.75 for r in p2) and {r["problem_id"] for r in p2} == {"p1"}
    pair = p2[0]
    assert pair["messages"][0]["role"] == "user" and pair["messages"][1]["content"].startswith("<think>")
    assert pair["level"] == 1 and pair["phase"] == "phase2"
    assert "curate funnel" in capsys.readouterr().out
    # rerun: skipped on the key; a changed threshold reruns
    assert run_distill(overrides(tmp_path))["curate"].created == m.created
    m2 = run_distill(overrides(tmp_path, "stage.dedup.max_per_problem=4"))["curate"]
    assert m2.key != m.key


def test_another_runs_generate_dir_as_input(tmp_path):
    """An ablation re-curates one expensive sample set in place: stage.input names its generate dir."""
    rows, _ = world(tmp_path)
    write_generate(tmp_path, rows, run="src")
    src = tmp_path / "runs" / "src" / "generate"
    here = run_distill(overrides(tmp_path, "run.name=src"))["curate"]
    there = run_distill(overrides(tmp_path, f"stage.input={src}"))["curate"]
    assert there.inputs[0]["key"] == "genkey" == here.inputs[0]["key"]
    for name in ("phase1", "phase2", "rejected"):
        assert output_rows(there.source.parent, name) == output_rows(here.source.parent, name)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"stage.input=.*empty.* directory without manifest.json"):
        run_distill(overrides(tmp_path, f"stage.input={tmp_path / 'empty'}"))


def test_external_messages_file_without_generate(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": good("4", i)},
            ],
            "gold": "4",
            "qid": "q1",
        }
        for i in range(3)
    ] + [
        {
            "messages": [
                {"role": "user", "content": "What is 3+3?"},
                {"role": "assistant", "content": good("7")},
            ],
            "gold": "6",
            "qid": "q2",
        }
    ]
    f = tmp_path / "traces.jsonl"
    write_rows(f, rows)
    write_rows(
        tmp_path / "heldout.jsonl", [{"id": "h", "problem": "unrelated held out thing", "answer": "1"}]
    )
    ov = overrides(
        tmp_path,
        f"stage.input={f}",
        "stage.columns.messages=messages",
        "stage.columns.answer=gold",
        "stage.columns.problem_id=qid",
    )
    m = run_distill(ov)["curate"]
    removed = {s["step"]: s["removed"] for s in m.metrics["steps"]}
    assert m.inputs[0]["sha256"] and m.metrics["kept"] == 3 and removed["wrong"] == 1 == sum(removed.values())
    pairs = output_rows(m.source.parent, "phase1", TRAIN_PAIR)
    assert [p["sample_idx"] for p in pairs] == [0, 1, 2] and pairs[0]["messages"][0][
        "content"
    ] == "What is 2+2?"


def test_missing_field_names_file_line_and_field(tmp_path):
    rows, _ = world(tmp_path)
    del rows[2]["completion"]
    gdir = tmp_path / "runs" / "t" / "generate"
    write_rows(gdir / "samples.jsonl", rows)
    Manifest("generate", "k", {}, outputs={"samples": {"path": str(gdir / "samples.jsonl")}}).write(gdir)
    with pytest.raises(
        RowError, match=r"samples\.jsonl:3: sample row is missing required field 'completion'"
    ):
        run_distill(overrides(tmp_path))


def test_unreadable_eval_set_is_an_error(tmp_path):
    rows, _ = world(tmp_path)
    write_generate(tmp_path, rows)
    bad = tmp_path / "nope.jsonl"
    with pytest.raises(Exception, match="eval set 'heldout'"):
        run_distill([*overrides(tmp_path)[:3], f"data.heldout.path={bad}", *overrides(tmp_path)[4:]])


class FakeJudge:
    """Says CORRECT to everything: checks the plumbing, not the judgement."""

    def __init__(self, *a):
        self.seen = []

    def generate(self, reqs, sampling):
        from distill.engines import Completion

        self.seen += reqs
        return [[Completion("<think>\nsure\n</think>\n\nCORRECT", "stop", 5, 5)] for _ in reqs]

    def close(self):
        pass


def test_judge_and_pseudo_labels(tmp_path, monkeypatch):
    import distill.engines

    judge = FakeJudge()
    monkeypatch.setattr(distill.engines, "make_engine", lambda *a: judge)
    rows = [sample("p1", "What is 3 + 4?", "7", i, good(a, i)) for i, a in enumerate(["7", "8", "7"])]
    rows += [sample("p3", "No reference here", None, i, good("5", i)) for i in range(5)]
    write_generate(tmp_path, rows)
    write_rows(
        tmp_path / "heldout.jsonl", [{"id": "h", "problem": "unrelated held out thing", "answer": "1"}]
    )
    m = run_distill(
        overrides(tmp_path, "stage.verify.judge.enabled=true", "stage.verify.pseudo_label.enabled=true")
    )["curate"]
    assert len(judge.seen) == 1 and "Student answer: 8" in judge.seen[0].messages[-1]["content"]
    assert m.metrics["judge_decided"] == 1 and m.metrics["pseudo_labelled_problems"] == 1
    assert m.metrics["verdict_sources"] == {"math_verify": 2, "judge": 1, "pseudo_label": 5}
    assert m.metrics["kept"] == 3 + 3  # p3: k=3 of 5


SURROGATE = "\udc80"  # a lone surrogate: JSON can carry it ("\udc80"), UTF-8 cannot


def _surrogate_file(tmp_path):
    """An external trace file (sample schema) with a lone surrogate in one field per row, and clean rows.

    The file is in the sample schema: with `columns`, `inputs.map_row` hashes the problem text before
    curate sees the row (a separate fix, in inputs.py)."""
    topics = ["apples", "trains", "prisms", "coins", "ladders", "clocks", "rivers", "stamps", "tiles"]
    rows = []
    for i, topic in enumerate(topics):
        n = i + 2
        problem = f"How many {topic} are there when {n} boxes hold one {topic} each?"
        rows.append(sample(f"p{2 * i + 1}", problem, str(n), 0, good(str(n), i)))
    bad = {"problem": 0, "answer": 1, "prompt": 2, "completion": 3, "meta": 4}
    for field, i in bad.items():
        r = rows[i]
        if field == "meta":
            r["meta"]["category"] = "t" + SURROGATE
        else:
            r[field] = r[field][:5] + SURROGATE + r[field][5:]
    f = tmp_path / "traces.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: the escape survives
    write_rows(
        tmp_path / "heldout.jsonl", [{"id": "h", "problem": "unrelated held out thing", "answer": "1"}]
    )
    return rows, bad, [f"stage.input={f}"]


def test_a_lone_surrogate_in_any_field_is_its_own_rejection_and_every_other_row_lands(tmp_path):
    rows, bad, cols = _surrogate_file(tmp_path)
    m = run_distill(overrides(tmp_path, *cols))["curate"]
    out = tmp_path / "runs" / "t" / "curate"
    rejected = {r["problem_id"]: r for r in output_rows(out, "rejected", REJECTED)}
    kept = {r["problem_id"] for r in output_rows(out, "phase1", TRAIN_PAIR)}
    assert set(rejected) == {rows[i]["problem_id"] for i in bad.values()}
    for field, i in bad.items():
        r = rejected[rows[i]["problem_id"]]
        assert r["reject_reason"] == "unencodable_text" and r["reject_detail"].startswith(field), r
    assert kept == {r["problem_id"] for r in rows} - set(rejected)  # every other row lands
    assert m.metrics["kept"] == len(rows) - len(bad) and m.metrics["input"] == len(rows)
    text = "".join(str(v) for r in rejected.values() for v in r.values())  # read back: valid UTF-8
    assert "\\udc80" in text and SURROGATE not in text  # the surrogate escaped


def test_a_writer_error_leaves_no_partial_file_and_no_manifest(tmp_path, monkeypatch):
    import distill.curate.filters as filters

    rows, _, cols = _surrogate_file(tmp_path)
    for r in rows:  # a surrogate only in completions, where nothing before the writer reads the bytes
        r["problem"], r["answer"], r["prompt"] = (
            r[k].replace(SURROGATE, "") for k in ("problem", "answer", "prompt")
        )
        r["meta"]["category"] = "t"
        r["completion"] = r["completion"].replace("step", "st" + SURROGATE + "ep")
    (tmp_path / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(filters, "unencodable_fields", lambda row: [])  # the check this test bypasses
    # the student-token length check would tokenize the surrogate first: off, so the writer meets it
    with pytest.raises(UnicodeEncodeError):
        run_distill(overrides(tmp_path, *cols, "stage.lengths.max_length=null"))
    out = tmp_path / "runs" / "t" / "curate"
    assert not (out / "manifest.json").exists()  # nothing claims to be done: a rerun starts over
    # no temp file of the failed write is left (the run lock's file, `.lock`, stays by design)
    leftovers = (
        [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"]
        if out.exists()
        else []
    )
    assert leftovers == []
    for p in out.rglob("*.parquet") if out.exists() else []:
        list(read_rows(p))  # any shard that was written is whole
    assert not list(out.rglob("*.tmp")) if out.exists() else True  # no half-written shard either


def test_a_surrogate_in_a_column_mapped_problem_is_rejected_not_a_crash(tmp_path):
    """Read through `stage.columns`, a problem with a lone surrogate and no id column gets a hashed id and
    its own rejection, like any other field's surrogate, instead of a UnicodeEncodeError in the reader."""
    rows, bad, _ = _surrogate_file(tmp_path)
    f = tmp_path / "mapped.jsonl"
    mapped = [{"question": r["problem"], "gold": r["answer"], "trace": r["completion"]} for r in rows]
    f.write_text("".join(json.dumps(r) + "\n" for r in mapped))
    cols = [f"stage.input={f}", "stage.columns.problem=question", "stage.columns.answer=gold"]
    m = run_distill(overrides(tmp_path, *cols, "stage.columns.completion=trace"))["curate"]
    out = tmp_path / "runs" / "t" / "curate"
    unencodable = [
        r for r in output_rows(out, "rejected", REJECTED) if r["reject_reason"] == "unencodable_text"
    ]
    # the problem, answer and completion rows; the prompt is rebuilt from the problem and meta is not mapped
    fields = sorted(re.match(r"\w+", r["reject_detail"]).group(0) for r in unencodable)
    assert fields == ["answer", "completion", "problem"]
    assert m.metrics["input"] == len(rows)
