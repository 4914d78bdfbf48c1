"""The generate stage with the hf backend: rows, manifest, skip/force, shards, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, output_rows, run_distill
from distill.core.schemas import SAMPLE

BASE = [
    "stage=generate",
    "stage.engine.backend=hf",
    "stage.engine.hf_threads=1",
    "data.train.limit=12",
    "stage.sampling.n=2",
    "stage.chunk_problems=4",
]


def _gen(root: Path, *extra: str):
    return run_distill([*BASE, f"run.root={root}", *extra])["generate"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    m = _gen(root)
    return root, m


def test_rows_and_manifest(ref):
    root, m = ref
    rows = output_rows(root / "toy" / "generate", "samples", SAMPLE)
    assert len(rows) == 24 and m.outputs["samples"]["rows"] == 24
    assert [(r["problem_id"], r["sample_idx"]) for r in rows[:4]] == [
        ("toy-train-00000", 0), ("toy-train-00000", 1), ("toy-train-00001", 0), ("toy-train-00001", 1),
    ]  # fmt: skip
    r = rows[0]
    assert r["teacher"] == "toy-teacher" and r["sampling"]["n"] == 2 and r["sampling"]["temperature"] == 0.8
    assert r["prompt"].startswith(r["problem"]) and "\\boxed{}" in r["prompt"]
    assert r["meta"]["level"] in (1, 2)
    assert all(x["prompt_tokens"] > 10 and x["completion_tokens"] > 0 for x in rows)
    closed = [x for x in rows if x["response"] is not None]
    assert len(closed) >= 0.8 * len(rows)  # the toy teacher writes <think>…</think> then an answer
    assert all("<think>" not in x["response"] and x["reasoning"] for x in closed)
    assert {x["finish_reason"] for x in rows} <= {"stop", "length"}
    man = json.loads((root / "toy" / "generate" / "manifest.json").read_text())
    assert man["stage"] == "generate" and man["key"] == m.key
    assert {i["name"] for i in man["inputs"]} == {"problems", "teacher"}
    assert man["metrics"]["tokens_per_s"] > 0 and man["versions"]["transformers"]


def test_rerun_skips_and_changed_config_reruns(ref, tmp_path, capsys):
    root, m = ref
    again = _gen(root)
    assert again.key == m.key and "up to date" in capsys.readouterr().out
    changed = _gen(root, "stage.sampling.temperature=0.5")
    assert changed.key != m.key and changed.metrics["generated_samples_this_run"] == 24


def test_force_reruns(ref):
    root, m = ref
    forced = _gen(root, "force=true")
    assert forced.key == m.key and forced.metrics["generated_samples_this_run"] == 24


def test_shards_merge_to_the_unsharded_rows(ref, tmp_path):
    root, _ = ref
    for i in range(3):  # as three Slurm array tasks would
        _gen(tmp_path, f"stage.shard={i}", "stage.num_shards=3")
    assert not (tmp_path / "toy" / "generate" / "manifest.json").exists()
    m = _gen(tmp_path, "stage.num_shards=3")  # the merge step: every shard already done
    assert m.metrics["generated_samples_this_run"] == 0
    assert len(m.outputs["samples"]["shards"]) == 3 and not list((tmp_path / "toy").rglob("*.jsonl"))
    assert m.metrics["rows"] == 24  # counted from the shards, streamed
    want = output_rows(root / "toy" / "generate", "samples")  # in problem order: the same rows
    assert output_rows(tmp_path / "toy" / "generate", "samples") == want


def _bad(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    "text,match",
    [
        (
            '{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "answer": "3"}\n',
            r"bad\.jsonl:2: missing column 'problem'",
        ),
        (
            '{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "problem": \n',
            r"bad\.jsonl:2: malformed JSON",
        ),
    ],
)
def test_bad_input_fails_clearly_and_keeps_earlier_output(ref, tmp_path, text, match):
    root, _ = ref
    out = root / "toy" / "generate"
    before = {p.relative_to(out): p.read_bytes() for p in [out / "manifest.json", *out.rglob("*.parquet")]}
    with pytest.raises(Exception, match=match):
        _gen(root, f"data.train.path={_bad(tmp_path, text)}")
    assert {p: (out / p).read_bytes() for p in before} == before


def test_unreadable_problem_file(ref, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        _gen(tmp_path, f"data.train.path={tmp_path / 'missing.jsonl'}")


def test_unknown_problem_source_key(tmp_path):
    with pytest.raises(KeyError, match="not a key of `data`"):
        _gen(tmp_path, "stage.problems=nope")


def test_toy_world_is_shipped():
    assert (REPO / "data/toy/teacher/model.safetensors").exists()
    assert (REPO / "data/toy/student/model.safetensors").exists()


def test_local_workers_run_shards_in_parallel_processes(ref, tmp_path):
    root, _ = ref
    m = _gen(tmp_path, "stage.num_shards=2", "stage.workers=2")
    logs = sorted(p.name for p in (tmp_path / "toy" / "generate").glob("worker-shard-*.log"))
    assert logs == ["worker-shard-00000.log", "worker-shard-00001.log"]
    assert m.metrics["generated_samples_this_run"] == 0  # the driver only merged
    want = output_rows(root / "toy" / "generate", "samples")
    assert output_rows(tmp_path / "toy" / "generate", "samples") == want
