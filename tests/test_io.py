"""Row schemas, atomic writes and the crash-safe append log."""

from __future__ import annotations

import json

import pytest

from distill.core.io import AppendLog, atomic_write_text, read_rows, write_rows
from distill.core.manifest import Manifest, config_key, finished
from distill.core.schemas import PROBLEM, RowError

GOOD = {"problem_id": "p1", "problem": "1 + 1 =", "answer": "2"}


def test_missing_field_names_file_line_and_field(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps({"problem_id": "p2", "answer": "3"}) + "\n")
    with pytest.raises(RowError, match=r"p\.jsonl:2: .*'problem'"):
        list(read_rows(f, PROBLEM))


def test_wrong_type_names_field(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({**GOOD, "answer": 2}) + "\n")
    with pytest.raises(RowError, match=r"p\.jsonl:1: field 'answer' .* got int"):
        list(read_rows(f, PROBLEM))


def test_malformed_json_names_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RowError, match=r"p\.jsonl:2: malformed JSON"):
        list(read_rows(f))


def test_parquet_roundtrip(tmp_path):
    f = tmp_path / "p.parquet"
    assert write_rows(f, [GOOD, {**GOOD, "problem_id": "p2"}], PROBLEM) == 2
    assert [r["problem_id"] for r in read_rows(f, PROBLEM)] == ["p1", "p2"]


def test_write_rows_checks_before_replacing(tmp_path):
    f = tmp_path / "out.jsonl"
    write_rows(f, [GOOD], PROBLEM)
    before = f.read_bytes()
    with pytest.raises(RowError):
        write_rows(f, [GOOD, {"problem_id": "x"}], PROBLEM)
    assert f.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_atomic_write_leaves_no_partial_file(tmp_path):
    f = tmp_path / "a.txt"
    atomic_write_text(f, "old")

    class Boom(str):
        def encode(self, *a, **k):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write_text(f, Boom("new"))
    assert f.read_text() == "old"


def test_append_log_drops_torn_tail(tmp_path):
    f = tmp_path / "log.jsonl"
    log = AppendLog(f, PROBLEM)
    log.append([GOOD, {**GOOD, "problem_id": "p2"}])
    with open(f, "ab") as fh:
        fh.write(b'{"problem_id": "p3", "prob')
    log2 = AppendLog(f, PROBLEM)
    assert log2.dropped_bytes == len(b'{"problem_id": "p3", "prob')
    assert [r["problem_id"] for r in log2.rows()] == ["p1", "p2"]
    log2.append([{**GOOD, "problem_id": "p3"}])
    assert [r["problem_id"] for r in log2.rows()] == ["p1", "p2", "p3"]


def test_append_log_torn_first_line(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_bytes(b'{"problem_id": "p1"')
    assert AppendLog(f, PROBLEM).rows() == []
    assert f.read_bytes() == b""


def test_config_key_and_finished(tmp_path):
    k1 = config_key({"stage": {"a": 1, "progress": True}}, ["x"], {"stage.progress"})
    k2 = config_key({"stage": {"a": 1, "progress": False}}, ["x"], {"stage.progress"})
    k3 = config_key({"stage": {"a": 2}}, ["x"])
    k4 = config_key({"stage": {"a": 1}}, ["y"])
    assert k1 == k2 and len({k1, k3, k4}) == 3
    Manifest(stage="s", key=k1, config={}).write(tmp_path)
    assert finished(tmp_path, k1).key == k1
    assert finished(tmp_path, k3) is None
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert {"stage", "key", "config", "inputs", "outputs", "metrics", "timings", "versions"} <= set(m)
    assert m["versions"]["torch"].startswith("2.13")
