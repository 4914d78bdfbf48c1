"""Issue 14: nothing wedged (run locks, duplicated and empty shards), damaged inputs named, train recovery,
atomic writes. Twin processes are real subprocesses on the hf backend and few: the suite's budget is tight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO, distill_cmd, output_bytes, run_distill
from distill.core.config import ProblemSource
from distill.core.io import atomic_write_text, read_rows, sweep_temp_files, write_rows
from distill.core.lock import RunLock, RunLocked
from distill.core.manifest import InputMismatch, upstream
from distill.core.paths import Paths
from distill.core.problems import load_problems
from distill.core.schemas import RowError
from distill.core.shards import read_shard

GEN = [
    "stage=generate",
    "stage.engine.backend=hf",
    "stage.engine.hf_threads=1",
    "stage.sampling.n=2",
    "stage.chunk_problems=2",
    "stage.progress=false",
    "wandb.enabled=false",
]
HOLD = "import sys, time; from distill.core.lock import RunLock; RunLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(60)"


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_lock_names_the_live_holder_and_takes_over_a_dead_one(tmp_path, capsys):
    lock = tmp_path / "generate" / ".lock"
    proc = _holder(lock)
    try:
        with pytest.raises(RunLocked, match=rf"pid {proc.pid} on host {socket.gethostname()}"):
            RunLock(lock, "generate of run t").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with RunLock(lock, "generate of run t") as held:  # the kernel dropped the dead process's flock
        assert held.took_over["pid"] == proc.pid
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {proc.pid}" in capsys.readouterr().err
    assert lock.read_text() == ""  # released cleanly: nothing to take over next time


def _lines(parts: Path) -> int:
    n = 0
    for f in parts.glob("*/shard-*.jsonl"):
        try:
            n += f.read_bytes().count(b"\n")
        except FileNotFoundError:  # a finished shard's log is deleted once its Parquet file is written
            pass
    return n


def test_twin_driver_fails_at_once_then_kill_resume_and_duplicates_are_repaired(tmp_path, capsys):
    args = [*GEN, "data.train.limit=24", f"run.root={tmp_path}"]
    proc = subprocess.Popen(
        distill_cmd(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    gen = tmp_path / "toy" / "generate"
    try:
        deadline = time.monotonic() + 180
        while _lines(gen / "parts") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the first driver finished before the twin started"
        t0 = time.monotonic()
        with pytest.raises(
            RunLocked, match=rf"generate of run toy is already running: pid {proc.pid} on host"
        ):
            run_distill(args)
        assert time.monotonic() - t0 < 30  # at once, not after generating
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    m = run_distill(args)["generate"]
    assert f"taking over the lock of pid {proc.pid}" in capsys.readouterr().err
    samples = output_bytes(gen, "samples")
    assert m.metrics["rows"] == 48 and 0 < m.metrics["generated_samples_this_run"] < 48
    # A shard log holding every row twice (a crash between a chunk's append and its bookkeeping, or two
    # drivers before locks existed) is repaired when the shard is written, not refused.
    shard = next(gen.glob("parts/*/shard-*.parquet"))
    rows = [json.dumps(r) + "\n" for r in read_shard(shard)]
    shard.with_suffix(".jsonl").write_text("".join(rows * 2))
    for f in (shard, shard.with_suffix(".manifest.json"), gen / "manifest.json"):
        f.unlink()
    m = run_distill(args)["generate"]
    assert output_bytes(gen, "samples") == samples
    assert "48 duplicated rows dropped" in capsys.readouterr().out
    assert m.metrics["generated_samples_this_run"] == 0  # repaired from the log, nothing regenerated
    assert not shard.with_suffix(".jsonl").exists()  # the shard is the data: the log is gone
    # A truncated shard is caught by the next stage, naming both row counts.
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, 40), shard)
    with pytest.raises(
        InputMismatch, match=r"rows: manifest 48, file 40; shard-00000-of-00001.parquet: sha256 manifest"
    ):
        run_distill(["stage=curate", f"run.root={tmp_path}", "stage.progress=false"])


def test_more_shards_than_problems_and_killed_writes_are_swept(tmp_path):
    args = [*GEN, "data.train.limit=3", "stage.num_shards=4", "stage.sampling.n=1", f"run.root={tmp_path}"]
    m = run_distill(args)["generate"]
    gen = tmp_path / "toy" / "generate"
    assert m.metrics["rows"] == 3 and [s["rows"] for s in m.outputs["samples"]["shards"]] == [1, 1, 1, 0]
    stray = gen / ".samples.jsonl.k1ll3d00.tmp"
    stray.write_bytes(b"x" * 1000)
    (gen / "manifest.json").unlink()
    assert run_distill(args)["generate"].key == m.key  # the merge of an empty shard works on every rerun
    assert not stray.exists()


def _write(tmp_path: Path, data: bytes, name: str = "p.jsonl") -> ProblemSource:
    (tmp_path / name).write_bytes(data)
    return ProblemSource(path=str(tmp_path / name))


@pytest.mark.parametrize(
    "data,exc,match",
    [
        (b'{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "problem": "caf\xe9", "answer": "3"}\n',
         RowError, r"p\.jsonl:2: not UTF-8 \(byte 0xe9 at column 28\); re-encode"),
        (b"", RowError, r"p\.jsonl: no problems"),
        (b'{"id": "a", "problem": "1+1", "answer": [1, 2]}\n', RowError,
         r"p\.jsonl:1: column 'answer' \(the answer column\) must be a string or number, got list"),
        (b'{"id": "a", "problem": "1+1", "answer": {"x": 1}}\n', RowError, r"p\.jsonl:1: .* got dict"),
        (b'{"id": null, "problem": "1+1", "answer": "2"}\n', RowError,
         r"p\.jsonl:1: column 'id' \(the id column\) must be a string or number, got null"),
    ],
)  # fmt: skip
def test_damaged_problem_files_name_file_line_and_field(tmp_path, data, exc, match):
    src = _write(tmp_path, data)
    with pytest.raises(exc, match=match):
        load_problems(src, Paths.for_run("runs", "t", tmp_path))


def test_directory_instead_of_a_file(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(IsADirectoryError, match=r"d\.jsonl: is a directory, expected"):
        run_distill([*GEN, f"data.train.path={tmp_path / 'd.jsonl'}", f"run.root={tmp_path}"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("stage.sampling.n=0", r"generate\.sampling\.n=0: must be >= 1 \(set stage\."),
        ("stage.sampling.n=-1", r"generate\.sampling\.n=-1: must be >= 1 \(set stage\."),
        ("stage.num_shards=0", r"generate\.num_shards=0: must be >= 1 \(set stage\."),
        ("stage.chunk_problems=0", r"generate\.chunk_problems=0: must be >= 1 \(set stage\."),
        ("data.train.limit=0", r"data\.train\.limit=0: must be >= 1"),
    ],
)
def test_bad_values_fail_at_composition_naming_the_key(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        run_distill([*GEN, override, f"run.root={tmp_path}"])
    assert not (tmp_path / "toy").exists()


def test_a_bad_value_in_the_last_stage_fails_before_the_first_runs(tmp_path):
    with pytest.raises(ValueError, match=r"export\.max_model_len=0: must be >= 1"):
        run_distill([f"run.root={tmp_path}", "stages.export.max_model_len=0"])
    assert not (tmp_path / "toy").exists()


def test_manifest_without_outputs_names_the_file(tmp_path):
    gen = tmp_path / "runs" / "t" / "generate"
    gen.mkdir(parents=True)
    (gen / "manifest.json").write_text(json.dumps({"stage": "generate", "key": "k", "config": {}}))
    with pytest.raises(ValueError, match=r"generate/manifest\.json: manifest has no 'outputs'"):
        upstream(Paths.for_run("runs", "t", tmp_path), "generate", "curate")


def test_external_traces_reject_list_answers_and_null_ids(tmp_path):
    from distill.curate.inputs import read_external

    f = tmp_path / "t.jsonl"
    write_rows(f, [{"q": "1+1", "a": "2", "c": "x"}, {"q": "2+2", "a": ["4"], "c": "y"}])
    with pytest.raises(RowError, match=r"t\.jsonl:2: column 'a' \(mapped to 'answer'\) must be a string"):
        read_external(f, {"problem": "q", "answer": "a", "completion": "c"})
    write_rows(f, [{"id": None, "q": "1+1", "c": "x"}])
    with pytest.raises(RowError, match=r"t\.jsonl:1: column 'id' \(mapped to 'problem_id'\) .* got null"):
        read_external(f, {"problem_id": "id", "problem": "q", "completion": "c"})


def test_atomic_writes_keep_the_plain_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_rows(tmp_path / "r.jsonl", [{"a": 1}])
        write_rows(tmp_path / "r.parquet", [{"a": 1}])
        atomic_write_text(tmp_path / "serve.sh", "#!/bin/sh\n", mode=0o777)  # as export writes serve.sh
        (tmp_path / "private").write_text("x")
        (tmp_path / "private").chmod(0o600)
        atomic_write_text(tmp_path / "private", "y")  # an existing file keeps its own mode
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {
        "a.txt": 0o644,
        "r.jsonl": 0o644,
        "r.parquet": 0o644,
        "serve.sh": 0o755,
        "private": 0o600,
    }
    assert list(read_rows(tmp_path / "r.jsonl")) == [{"a": 1}]


def test_sweep_takes_only_killed_writes_temp_files(tmp_path):
    keep = [tmp_path / "samples.jsonl", tmp_path / ".lock", tmp_path / "parts" / ".s.jsonl.abcd1234.tmp"]
    gone = [tmp_path / ".samples.jsonl.abcd1234.tmp", tmp_path / "eval" / ".metrics.json.x_y9z8w7.tmp"]
    for p in keep + gone:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert sorted(sweep_temp_files(tmp_path, skip=("parts",))) == sorted(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)


def _ckpt(d: Path, step: int, state: bool = True, cut: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file

    c = d / f"checkpoint-{step}"
    c.mkdir(parents=True)
    save_file({"w": torch.zeros(64)}, str(c / "model.safetensors"))
    if cut:
        (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-10])
    if state:
        (c / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return c


def test_half_written_newest_checkpoint_falls_back_to_the_newest_complete(tmp_path):
    from distill.train.recovery import newest_complete, sweep_incomplete
    from distill.train.worker import last_checkpoint

    d = tmp_path / "checkpoints"
    _ckpt(d, 4), _ckpt(d, 10), _ckpt(d, 12, cut=True), _ckpt(d, 14, state=False)
    assert newest_complete(d).name == "checkpoint-10"
    assert Path(last_checkpoint(tmp_path)).name == "checkpoint-10"
    gone = sweep_incomplete(d)
    assert [(p.name, why.split()[0]) for p, why in gone] == [("checkpoint-14", "trainer_state.json"),
                                                             ("checkpoint-12", "model.safetensors")]  # fmt: skip
    assert sorted(p.name for p in d.iterdir()) == ["checkpoint-10", "checkpoint-4"]


def test_failing_rank_surfaces_its_own_exception(tmp_path):
    """Two real CPU ranks on a student whose weights have trailing bytes: the error is the rank's."""
    from test_train import fake_curate

    student = tmp_path / "student"
    student.mkdir()
    for f in (REPO / "data" / "toy" / "student").iterdir():
        (student / f.name).write_bytes(f.read_bytes())
    with open(student / "model.safetensors", "ab") as f:
        f.write(b"\0" * 16)
    fake_curate(tmp_path / "runs" / "t", rows_per_phase=4)
    args = ["stage=train", f"run.root={tmp_path / 'runs'}", "run.name=t", f"student.path={student}",
            "+stage.phases=[phase1]", "stage.num_processes=2", "wandb.enabled=false", "stage.progress=false"]  # fmt: skip
    with pytest.raises(
        RuntimeError, match=r"train phase1: rank \d \(host .*\) failed first: SafetensorError: .*"
    ):
        run_distill(args)
    errors = sorted((tmp_path / "runs" / "t" / "train" / "phase1").glob("rank-*.error.json"))
    assert errors and "Traceback" in json.loads(errors[0].read_text())["traceback"]
