"""Every cluster profile x stage composes; dry runs render the sbatch calls from config; bad values name their key.

No Slurm needed: nothing here submits (tests/test_slurm.py runs jobs on a real cluster).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf

from conftest import REPO, compose_root, hydra_ctx, run_distill, stage_config
from distill.cluster.job import job_port
from distill.cluster.launch import srun_ranks_command
from distill.cluster.slurm import stage_jobs
from distill.core.paths import Paths
from distill.pipeline import STAGES, load_resolved

CLUSTERS = sorted(p.stem for p in (REPO / "conf" / "cluster").glob("*.yaml"))


def test_profiles_and_their_launch_comments():
    assert CLUSTERS == ["h100", "local", "mi300", "slurm"]
    for path in [*(REPO / "conf" / "cluster").glob("*.yaml"), *(REPO / "conf" / "stage").glob("*.yaml")]:
        assert path.read_text().startswith("# python -m distill"), path


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_cluster_and_stage_composes(cluster, stage):
    overrides = [f"stage={stage}", f"cluster={cluster}"]
    cfg = stage_config(stage, overrides)
    assert OmegaConf.get_type(cfg.cluster).__name__ == "ClusterConfig"
    assert cfg.cluster.kind == ("local" if cluster == "local" else "slurm")
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def jobs_for(stage: str, overrides: list[str], tmp_path: Path):
    ov = [f"stage={stage}", *overrides]
    cfg = stage_config(stage, ov)
    return cfg, stage_jobs(cfg, Paths.for_run(str(tmp_path), "toy", REPO), ["41"])


def test_h100_train_two_nodes_of_eight_gpus(tmp_path):
    cfg, [job] = jobs_for(
        "train", ["cluster=h100", "cluster.partition=gpu", "cluster.account=proj"], tmp_path
    )
    assert (cfg.stage.num_machines, cfg.stage.num_processes) == (2, 16)  # one rank per GPU
    for opt in ("--nodes=2", "--gpus-per-node=8", "--partition=gpu", "--account=proj", "--time=24:00:00"):
        assert opt in job.options
    assert "--dependency=afterok:41" in job.options and "--requeue" in job.options
    assert job.script.name == "train.sbatch"
    assert job.env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and "NCCL_SOCKET_IFNAME" in job.env


def test_mi300_profile_sets_rocm_variables(tmp_path):
    _, [job] = jobs_for("eval", ["cluster=mi300"], tmp_path)
    assert job.env["HIP_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" and job.env["HSA_FORCE_FINE_GRAIN_PCIE"] == "1"
    assert "--gpus-per-node=8" in job.options


def test_generate_array_then_merge(tmp_path):
    ov = ["cluster=slurm", "stage.num_shards=4", "cluster.stages.generate.array_parallelism=2"]
    _, (array, merge) = jobs_for("generate", ov, tmp_path)
    assert "--array=0-3%2" in array.options and array.script.name == "array.sbatch"
    assert "--array" not in " ".join(merge.options) and "--dependency=afterok:<array>" in merge.options
    assert any(o.endswith("/slurm/logs/generate-%A_%a.out") for o in array.options)
    assert array.env["DISTILL_STAGE_CONFIG"].endswith("/toy/slurm/generate.yaml")


def test_curate_takes_a_whole_node(tmp_path):
    _, [job] = jobs_for("curate", ["cluster=slurm"], tmp_path)
    assert "--exclusive" in job.options and "--nodes=1" in job.options


def test_dry_run_prints_scripts_and_commands_and_writes_nothing(tmp_path, capsys):
    ids = run_distill(
        ["cluster=slurm", "cluster.dry_run=true", f"run.root={tmp_path}", "+stages.generate.num_shards=2"]
    )
    out = capsys.readouterr().out
    assert list(ids) == list(STAGES) and ids["generate"] == ["(dry run)", "(dry run)"]
    assert out.count("sbatch --parsable") == 6  # generate array + merge, curate, train, eval, export
    assert "--dependency=afterok:<train>:<eval>" in out and "--array=0-1" in out
    for script in ("stage.sbatch", "array.sbatch", "train.sbatch"):
        assert f"slurm/{script}:\n#!/usr/bin/env bash" in out
    cmd = next(line for line in out.splitlines() if "sbatch --parsable" in line)
    assert shlex.split(cmd)[0] == "sbatch"
    assert not tmp_path.joinpath("toy").exists()


def test_batch_scripts_read_nothing_out_of_yaml():
    for script in (REPO / "slurm").glob("*.sbatch"):
        text = script.read_text()
        assert "#SBATCH" not in text and "grep" not in text and ".yaml" not in text, script
        assert "distill.cluster.job" in text


@pytest.mark.parametrize(
    "override, message",
    [
        ("cluster.kind=kube", "cluster.kind='kube'"),
        ("cluster.stages.train.nodes=0", "cluster.stages.train.nodes=0"),
        ("cluster.stages.eval.nodes=2", "cluster.stages.eval.nodes=2"),
        ("cluster.stages.generate.array_parallelism=0", "cluster.stages.generate.array_parallelism=0"),
        ("+stages.generate.num_shards=0", "generate.num_shards=0"),
        ("stages.train.num_processes=3", "train.num_processes=3"),
    ],
)
def test_bad_cluster_config_names_the_key(override, message, tmp_path):
    ov = ["cluster=slurm", "cluster.dry_run=true", "cluster.stages.train.nodes=2", f"run.root={tmp_path}"]
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        run_distill([*ov, override])


def test_unknown_resource_key_fails():
    with hydra_ctx(), pytest.raises(HydraException, match="cluster.stages.train.nodez"):
        compose_root(["cluster=slurm", "cluster.stages.train.nodez=2"])


@pytest.mark.parametrize("key", ["cluster.stages.train.nodez", "cluster.gpus"])
def test_unknown_key_added_with_plus_fails(key, tmp_path):
    with pytest.raises(ValueError, match=f"{key}: unknown key"):
        run_distill(["cluster=slurm", "cluster.dry_run=true", f"run.root={tmp_path}", f"+{key}=2"])


def test_unknown_profile_lists_the_profiles():
    with hydra_ctx(), pytest.raises(HydraException, match="cluster/gpu") as e:
        compose_root(["cluster=gpu"])
    assert all(name in str(e.value) for name in CLUSTERS)


def test_command_line_stages_values_reach_the_stage():
    ov = ["stages.generate.sampling.n=2", "+stages.generate.num_shards=3"]
    cfg = stage_config("generate", ov)
    assert (cfg.stage.sampling.n, cfg.stage.num_shards) == (2, 3)


def test_job_runner_loads_the_resolved_config_typed(tmp_path):
    ov = ["stage=generate", "cluster=slurm", "stage.num_shards=2"]
    cfg = stage_config("generate", ov)
    (tmp_path / "g.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    back = load_resolved(tmp_path / "g.yaml")
    assert OmegaConf.get_type(back.stage).__name__ == "GenerateConfig" and back.stage.num_shards == 2
    assert OmegaConf.get_type(back.cluster).__name__ == "ClusterConfig" and back.cluster.kind == "slurm"


def test_multi_node_launch_needs_an_allocation(tmp_path, monkeypatch):
    from distill.cluster.launch import LaunchSpec

    for k in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        monkeypatch.delenv(k, raising=False)
    spec = LaunchSpec(num_processes=2, num_machines=2)
    with pytest.raises(RuntimeError, match="train.num_machines=2 needs a Slurm allocation"):
        srun_ranks_command(spec, "distill.train.worker", [], tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    cmd = srun_ranks_command(spec, "distill.train.worker", ["--config", "p.json"], tmp_path)
    assert cmd[:2] == ["srun", "--nodes=2"] and "--kill-on-bad-exit=1" in cmd and "node-launch" in cmd
    assert (tmp_path / "launch.json").exists()
    assert job_port(7, 0) == job_port(7, 0) != job_port(7, 1) and 20000 <= job_port(123456, 3) < 30000


def test_failed_submission_cancels_the_jobs_it_queued(tmp_path, monkeypatch):
    import distill.cluster.slurm as slurm

    submitted, cancelled = [], []

    def fake_sbatch(job):
        if job.stage == "train":
            raise RuntimeError("sbatch: error: Invalid account")
        submitted.append(str(100 + len(submitted)))
        return submitted[-1]

    monkeypatch.setattr(slurm, "sbatch", fake_sbatch)
    monkeypatch.setattr(slurm.subprocess, "run", lambda cmd, **kw: cancelled.append(cmd))
    with pytest.raises(RuntimeError, match="Invalid account"):
        run_distill(["cluster=slurm", f"run.root={tmp_path}", "+stages.generate.num_shards=2"])
    assert submitted == ["100", "101", "102"]  # generate array + merge, curate
    assert cancelled == [["scancel", "100", "101", "102"]]
    written = load_resolved(tmp_path / "toy" / "slurm" / "curate.yaml")  # the resolved config the job reads
    assert written.stage.name == "curate" and written.cluster.kind == "slurm"
