"""Problem sources: local jsonl/parquet or a dataset name, with configurable columns."""

from __future__ import annotations

import json

import pytest

from distill.core.config import ProblemSource
from distill.core.io import write_rows
from distill.core.paths import Paths
from distill.core.problems import load_problems, shard_of
from distill.core.schemas import RowError


def _paths(tmp_path):
    return Paths.for_run(str(tmp_path / "runs"), "t", base=tmp_path)


def test_column_mapping_and_meta(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(
        "".join(
            json.dumps({"uid": i, "question": f"q{i}", "sol": i * 2, "level": 1}) + "\n" for i in range(3)
        )
    )
    src = ProblemSource(path=str(f), id_col="uid", problem_col="question", answer_col="sol")
    rows = load_problems(src, _paths(tmp_path))
    assert rows[1] == {"problem_id": "1", "problem": "q1", "answer": "2", "meta": {"level": 1}}


def test_missing_column_names_file_line_and_column(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(
        json.dumps({"id": 1, "problem": "a", "answer": "1"})
        + "\n"
        + json.dumps({"id": 2, "problem": "b"})
        + "\n"
    )
    with pytest.raises(RowError, match=r"q\.jsonl:2: missing column 'answer'"):
        load_problems(ProblemSource(path=str(f)), _paths(tmp_path))


def test_duplicate_id_is_an_error(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text((json.dumps({"id": 1, "problem": "a", "answer": "1"}) + "\n") * 2)
    with pytest.raises(RowError, match="duplicate problem id '1'"):
        load_problems(ProblemSource(path=str(f)), _paths(tmp_path))


def test_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_problems(ProblemSource(path=str(tmp_path / "nope.jsonl")), _paths(tmp_path))


def test_parquet_and_hashed_ids_and_limit(tmp_path):
    f = tmp_path / "q.parquet"
    write_rows(f, [{"problem": f"q{i}", "answer": str(i)} for i in range(5)])
    rows = load_problems(ProblemSource(path=str(f), id_col=None, limit=3), _paths(tmp_path))
    assert len(rows) == 3 and len({r["problem_id"] for r in rows}) == 3


def test_dataset_name_goes_through_load_dataset(tmp_path):
    d = tmp_path / "myset"
    d.mkdir()
    (d / "train.jsonl").write_text(
        "".join(json.dumps({"id": f"x{i}", "problem": "p", "answer": "1"}) + "\n" for i in range(4))
    )
    rows = load_problems(ProblemSource(dataset=str(d), split="train"), _paths(tmp_path))
    assert [r["problem_id"] for r in rows] == ["x0", "x1", "x2", "x3"]


def test_shards_partition_the_problems():
    rows = [{"problem_id": str(i)} for i in range(10)]
    shards = [shard_of(rows, i, 3) for i in range(3)]
    assert sorted(r["problem_id"] for s in shards for r in s) == sorted(r["problem_id"] for r in rows)
    with pytest.raises(ValueError, match="stage.shard=3"):
        shard_of(rows, 3, 3)


def test_unknown_data_key_names_the_config_key_and_the_valid_names():
    from omegaconf import OmegaConf

    from distill.core.problems import data_source

    cfg = OmegaConf.create({"data": {"train": {"path": "a.jsonl"}, "heldout": {"path": "b.jsonl"}}})
    assert data_source(cfg, "train", "generate.problems").path == "a.jsonl"
    with pytest.raises(
        KeyError, match=r"eval\.problems: 'test' is not a key of `data` \(have: train, heldout\)"
    ):
        data_source(cfg, "test", "eval.problems")
