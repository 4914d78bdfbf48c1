"""The pipeline on a real Slurm cluster: Debian's Slurm 22.05 with two emulated nodes on this machine.

A session fixture starts the cluster with `scripts/slurm_local.sh start` (installing Slurm if missing) and
stops it at the end if it started it. The tests skip only where Slurm cannot be installed (not root, no apt).

To stay within a few minutes on 2 cores, one tiny toy pipeline submitted with `cluster=slurm` serves three
tests: its generate is a 2-task array job (the 2-shard test), its train runs on 2 nodes with one CPU rank
each under ZeRO-2 (the multi-node test). Local reference runs go in-process while the cluster works.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, output_bytes, output_rows, run_distill
from distill.core.shards import read_shard

pytestmark = pytest.mark.slurm
SCRIPT = REPO / "scripts" / "slurm_local.sh"
DONE = {"COMPLETED"}
ENDED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# generate + curate: what the local reference and the Slurm run must agree on byte for byte
GENERATE = [
    "data.train.limit=16",
    "data.heldout.limit=2",
    "wandb.enabled=false",
    "stages.generate.engine.backend=hf",
    "+stages.generate.engine.hf_threads=1",
    "stages.generate.sampling.n=2",
    "+stages.generate.progress=false",
    "+stages.generate.chunk_problems=2",
]
REST = [  # the downstream stages, as small as they go: one phase, 2 epochs, 2 held-out problems
    "+stages.train.phases=[phase1]",
    "stages.train.strategy=zero2",
    "stages.train.num_processes=2",
    "stages.train.epochs=2",
    "stages.eval.models=[teacher,train]",
    "stages.eval.engine.backend=hf",
    "+stages.eval.engine.hf_threads=1",
    "stages.eval.sampling.n=1",
    "stages.eval.sampling.max_tokens=48",
]


def _slurm_up(conf: str) -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h"], env={**os.environ, "SLURM_CONF": conf}, capture_output=True)
    return out.returncode == 0


@pytest.fixture(scope="session")
def slurm():
    conf = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True)
    conf = conf.stdout.strip().split("=", 1)[1]
    started = not _slurm_up(conf)
    if started:
        out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        if out.returncode != 0 and not shutil.which("slurmctld"):
            pytest.skip(f"Slurm cannot be installed here (slurm_local.sh start: {out.stderr.strip()[-300:]})")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if started:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
    os.environ.pop("SLURM_CONF") if old is None else os.environ.__setitem__("SLURM_CONF", old)


def job_info(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job -o`: one dict per job (an array job: one per task)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    )
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.stdout.splitlines()]


def wait_jobs(ids: list[str], logs: Path, timeout: float = 600) -> None:
    """Until every job completed; any failed or cancelled job fails the test with the jobs' log tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {i: {j["JobState"] for j in job_info(i)} for i in ids}
        if any(s & ENDED for s in states.values()) or all(s <= DONE for s in states.values()):
            break
        time.sleep(1)
    tails = "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-2500:]}" for f in logs.glob("*.out"))
    assert all(s <= DONE for s in states.values()), f"jobs {states}\n{tails}"


def key(run: Path, stage: str) -> str:
    return json.loads((run / stage / "manifest.json").read_text())["key"]


@pytest.fixture(scope="module")
def toy(slurm, tmp_path_factory):
    """The tiny toy pipeline through Slurm, plus two local references computed while the jobs run."""
    root = tmp_path_factory.mktemp("slurm")
    t0 = time.monotonic()
    slurm_args = [f"run.root={root / 'slurm'}", *GENERATE, "+stages.generate.num_shards=2", *REST]
    slurm_args += [
        "+stages.curate.num_shards=2"
    ]  # curate's sample pass as a 2-task array too (one unit each)
    slurm_args += ["cluster=slurm", "cluster.stages.train.nodes=2"]
    ids = run_distill(slurm_args)
    # The same config run here (generate + curate only: train/eval/export on 2 CPU "nodes" vs one machine
    # differ in launch, not in what they compute from; that they complete is what is checked of them).
    run_distill([f"run.root={root / 'local'}", *GENERATE, "+stages.generate.num_shards=2", *REST,
                 "pipeline=[generate,curate]"])  # fmt: skip
    run_distill([f"run.root={root / 'one'}", *GENERATE, "pipeline=[generate]"])  # one shard, no array
    run = root / "slurm" / "toy"
    wait_jobs([i for jobs in ids.values() for i in jobs], run / "slurm" / "logs")
    print(f"slurm toy pipeline: {time.monotonic() - t0:.1f}s")
    return run, root / "local" / "toy", root / "one" / "toy", ids


def test_pipeline_on_slurm_completes_and_matches_local_run(toy):
    run, local, _, ids = toy
    assert list(ids) == ["generate", "curate", "train", "eval", "export"] and len(ids["generate"]) == 2
    assert len(ids["curate"]) == 2  # an array, then its merge
    for stage in ids:
        assert json.loads((run / stage / "manifest.json").read_text())["stage"] == stage
    for stage in ("generate", "curate"):  # same config, same inputs: same keys
        assert key(run, stage) == key(local, stage)
    assert output_bytes(run / "generate", "samples") == output_bytes(local / "generate", "samples")
    outputs = json.loads((local / "curate" / "manifest.json").read_text())["outputs"]
    names = [n for n, o in outputs.items() if o.get("rows") is not None]
    assert "phase1" in names and "rejected" in names
    logs = run / "slurm" / "logs"
    for task in (0, 1):  # each array task curated its own unit; the single local process did both
        assert f"curate shard {task}: job" in (logs / f"curate-{ids['curate'][0]}_{task}.out").read_text()
    for name in names:  # row for row, and byte for byte
        assert output_rows(run / "curate", name) == output_rows(local / "curate", name), name
        assert output_bytes(run / "curate", name) == output_bytes(local / "curate", name), name
    assert (run / "export" / "model" / "model.safetensors").exists()
    evals = json.loads((run / "eval" / "metrics.json").read_text())["models"]
    assert set(evals) == {"teacher", "phase1"}


def test_two_shard_array_merges_to_one_shard_rows(toy):
    run, _, one, ids = toy
    array_id = ids["generate"][0]
    tasks = job_info(array_id)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]  # one Slurm task per shard
    logs = run / "slurm" / "logs"
    for shard in (0, 1):
        assert f"generate shard {shard}: job" in (logs / f"generate-{array_id}_{shard}.out").read_text()
    parts = sorted((run / "generate" / "parts").glob("*/shard-*.parquet"))
    assert [p.name.split(".")[0] for p in parts] == ["shard-00000-of-00002", "shard-00001-of-00002"]
    assert all(len(list(read_shard(p))) == 16 for p in parts)
    assert not list((run / "generate").rglob("*.jsonl"))  # the shards are the data: no log, no merged copy
    assert output_rows(run / "generate", "samples") == output_rows(one / "generate", "samples")
    keys = [(r["problem_id"], r["sample_idx"]) for r in output_rows(run / "generate", "samples")]
    assert len(keys) == len(set(keys)) == 32


def test_two_node_zero2_training_world_size_2(toy):
    run, _, _, ids = toy
    info = job_info(ids["train"][0])[0]
    assert info["NumNodes"] == "2" and info["JobState"] == "COMPLETED"
    phase = run / "train" / "phase1"
    m = json.loads((phase / "manifest.json").read_text())
    assert m["config"]["world_size"] == 2 and m["config"]["strategy"] == "zero2"
    assert m["metrics"]["world_size"] == 2 and m["metrics"]["global_step"] == m["metrics"]["max_steps"] > 0
    assert json.loads((phase / "launch.json").read_text())["spec"]["num_machines"] == 2
    log = (phase / "ranks.log").read_text()
    # one launcher per node, each with one rank, one process group across both
    assert "node-launch: node n1 machine_rank 0/2" in log and "node-launch: node n2 machine_rank 1/2" in log
    assert "2 ranks up (DistributedType.DEEPSPEED)" in log


def _lines(run: Path) -> int:
    n = 0
    for p in (run / "generate" / "parts").glob("*/shard-*.jsonl"):
        try:
            n += p.read_bytes().count(b"\n")
        except FileNotFoundError:  # a finished shard's log is deleted once its Parquet file is written
            pass
    return n


def test_requeue_of_running_generate_keeps_every_row_once(slurm, toy, tmp_path):
    one = toy[2]
    ids = run_distill([f"run.root={tmp_path}", *GENERATE, "pipeline=[generate]", "cluster=slurm"])
    job, run = ids["generate"][0], tmp_path / "toy"
    deadline = time.monotonic() + 180
    while _lines(run) < 4:  # the first chunk (2 problems x 2 samples) is on disk
        assert time.monotonic() < deadline and job_info(job)[0]["JobState"] in ("PENDING", "RUNNING")
        time.sleep(0.1)
    subprocess.run(["scontrol", "requeue", job], check=True)
    before = _lines(run)
    wait_jobs([job], run / "slurm" / "logs", timeout=300)
    assert int(job_info(job)[0]["Restarts"]) == 1
    assert 4 <= before < 32, before  # requeued mid-way
    m = json.loads((run / "generate" / "manifest.json").read_text())
    assert m["metrics"]["rows"] == 32 and m["metrics"]["generated_samples_this_run"] < 32  # it resumed
    keys = [(r["problem_id"], r["sample_idx"]) for r in output_rows(run / "generate", "samples")]
    assert len(keys) == len(set(keys)) == 32
    assert output_bytes(run / "generate", "samples") == output_bytes(one / "generate", "samples")


DIE = """import os, sys, time
rank = int(os.environ["RANK"])
print(f"rank {rank} of {os.environ['WORLD_SIZE']} on {os.environ.get('SLURMD_NODENAME')}", flush=True)
if rank == 1:
    time.sleep(2)
    sys.exit(3)
time.sleep(600)
"""


def test_a_dying_rank_ends_the_multi_node_job(slurm, tmp_path):
    """Rank 1 exits with 3 while rank 0 (on the other node) would wait for 10 min: the job must fail at once."""
    (tmp_path / "die_rank.py").write_text(DIE)
    launch = (
        "import subprocess, sys; from pathlib import Path; from distill.cluster.launch import LaunchSpec; "
        "from distill.cluster.launch import srun_ranks_command; "
        "spec = LaunchSpec(num_processes=2, num_machines=2); "
        f"sys.exit(subprocess.call(srun_ranks_command(spec, 'die_rank', [], Path({str(tmp_path)!r}))))"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    log = tmp_path / "job.out"
    cmd = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--time=5", f"--output={log}"]
    cmd += [f"--chdir={tmp_path}", f"--wrap={shlex.join([sys.executable, '-c', launch])}"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    t0 = time.monotonic()
    while job_info(job)[0]["JobState"] in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.monotonic() - t0 < 120, f"the surviving rank kept the job alive:\n{log.read_text()}"
        time.sleep(0.5)
    text = log.read_text()
    assert job_info(job)[0]["JobState"] == "FAILED", text
    assert "rank 0 of 2 on n1" in text and "rank 1 of 2 on n2" in text, text
