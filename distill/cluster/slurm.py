"""Slurm submission: each stage of a run as a batch job, chained with `afterok`, all numbers from config.

`python -m distill cluster=slurm` resolves every stage exactly as a local run would (distill.pipeline), writes
the resolved root config to `<run>/slurm/<stage>.yaml` and submits the stage's batch script from `slurm/`
with `sbatch` options computed here. The scripts stay thin: they read `DISTILL_*` variables (set in the
environment sbatch exports) and start `python -m distill.cluster.job`, which runs the stage without Hydra.

generate and curate with `num_shards > 1` are an array job (one shard per task; curate's tasks share its
units) plus a merge job after it; train on
more than one node starts one `accelerate launch` per node through `srun` (see `srun_ranks_command`).
A requeued or resubmitted job reruns the same stage function, which resumes: generate from its append
logs, train from its last checkpoint, finished stages from their manifests.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from distill.cluster.config import StageResources, validate
from distill.core.io import atomic_write_text
from distill.core.paths import REPO_ROOT, Paths
from distill.core.secrets import scrub_config

SCRIPTS = REPO_ROOT / "slurm"
# What each stage reads from another stage of the same submission: its job waits for those (afterok).
ARRAY_STAGES = ("generate", "curate")  # an array of shard tasks, then a merge job
NEEDS = {"curate": ("generate",), "train": ("curate",), "eval": ("train",), "export": ("train", "eval")}


@dataclass
class Job:
    """One sbatch call: what a dry run prints and a real run submits."""

    stage: str
    script: Path
    options: list[str]
    env: dict[str, str]
    job_id: str | None = None

    def command(self) -> list[str]:
        return ["sbatch", "--parsable", *self.options, str(self.script)]


def resources(cluster: DictConfig, name: str) -> dict[str, Any]:
    """The stage's request with the cluster-wide fallbacks filled in."""
    res = cluster.stages.get(name) or OmegaConf.structured(StageResources)
    r = OmegaConf.to_container(res, resolve=True)
    for key in ("time", "gpus_per_node", "cpus_per_task", "mem"):
        if r[key] is None:
            r[key] = cluster[key]
    return r


def fit_stage(cfg: DictConfig, res: dict[str, Any]) -> None:
    """Makes the stage config agree with its allocation (train: machines and ranks), or says which key is wrong."""
    g, name = cfg.stage, cfg.stage.name
    if name in ARRAY_STAGES and g.num_shards < 1:
        raise ValueError(f"{name}.num_shards={g.num_shards}: the array needs at least one shard")
    if name == "generate" and 0 < res["gpus_per_node"] < g.engine.tensor_parallel_size:
        raise ValueError(
            f"cluster.stages.generate.gpus_per_node={res['gpus_per_node']} < generate.engine."
            f"tensor_parallel_size={g.engine.tensor_parallel_size}: each array task runs one engine"
        )
    if name != "train":
        return
    nodes = res["nodes"]
    with open_dict(g):
        g.num_machines = nodes
        if res["gpus_per_node"] > 0:  # one rank per GPU
            g.num_processes = nodes * res["gpus_per_node"]
    if g.num_processes % nodes:
        raise ValueError(
            f"train.num_processes={g.num_processes} is not a multiple of cluster.stages.train.nodes={nodes}"
        )


def sbatch_options(
    cfg: DictConfig, name: str, res: dict[str, Any], paths: Paths, deps: list[str], array: int | None = None
) -> list[str]:
    """Every sbatch option of one job, from the resolved config (nothing is read back out of YAML later)."""
    c = cfg.cluster
    suffix = "-merge" if name in ARRAY_STAGES and array is None and cfg.stage.num_shards > 1 else ""
    opts = [f"--job-name=distill-{cfg.run.name}-{name}{suffix}", f"--nodes={res['nodes']}"]
    opts += ["--ntasks-per-node=1", f"--time={res['time']}"]
    opts += [f"--{k.replace('_', '-')}={res[k]}" for k in ("cpus_per_task", "mem") if res[k] is not None]
    if res["gpus_per_node"]:
        opts.append(f"--gpus-per-node={res['gpus_per_node']}")
    opts += [f"--{k}={c[k]}" for k in ("partition", "account", "qos") if c[k]]
    if res["exclusive"]:
        opts.append("--exclusive")
    if array is not None:
        par = f"%{res['array_parallelism']}" if res["array_parallelism"] else ""
        opts.append(f"--array=0-{array - 1}{par}")
    if deps:
        opts += [f"--dependency=afterok:{':'.join(deps)}", "--kill-on-invalid-dep=yes"]
    if c.requeue:
        opts += ["--requeue", "--open-mode=append"]  # a requeued job appends to its log
    pattern = f"{name}-%A_%a.out" if array is not None else f"{name}{suffix}-%j.out"
    logs = paths.run_dir / "slurm" / "logs"
    opts += [f"--output={logs / pattern}", f"--chdir={paths.base}", "--export=ALL"]
    return opts + list(c.extra_sbatch)


def _pythonpath() -> str:
    """This checkout first, so jobs import the code that submitted them (not another install of distill)."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    return os.pathsep.join([str(REPO_ROOT), *rest])


def job_env(cfg: DictConfig, config_file: Path, base: Path) -> dict[str, str]:
    """The variables the batch scripts read, plus the profile's `env` (NCCL/RCCL/HIP settings)."""
    c = cfg.cluster
    env = {str(k): str(v) for k, v in c.env.items()}
    env |= {
        "DISTILL_PYTHON": c.python or sys.executable,
        "DISTILL_STAGE_CONFIG": str(config_file),
        "DISTILL_BASE": str(base),
        "DISTILL_SETUP": "\n".join(c.setup),
        "PYTHONPATH": _pythonpath(),
    }
    if c.main_process_port:
        env["DISTILL_MAIN_PROCESS_PORT"] = str(c.main_process_port)
    return env


def stage_jobs(cfg: DictConfig, paths: Paths, deps: list[str]) -> list[Job]:
    """The stage's jobs in submission order: one, or an array (generate, curate) then its merge."""
    name = cfg.stage.name
    res = resources(cfg.cluster, name)
    fit_stage(cfg, res)
    slurm_dir = paths.run_dir / "slurm"
    env = job_env(cfg, slurm_dir / f"{name}.yaml", paths.base)
    if name in ARRAY_STAGES and cfg.stage.num_shards > 1:
        array = Job(name, SCRIPTS / "array.sbatch", [], env)
        array.options = sbatch_options(cfg, name, res, paths, deps, array=cfg.stage.num_shards)
        merge_res = res | {"gpus_per_node": 0, "exclusive": False}
        merge = Job(name, SCRIPTS / "stage.sbatch", [], env)
        merge.options = sbatch_options(cfg, name, merge_res, paths, ["<array>"])
        return [array, merge]
    script = "train.sbatch" if name == "train" else "stage.sbatch"
    return [Job(name, SCRIPTS / script, sbatch_options(cfg, name, res, paths, deps), env)]


def sbatch(job: Job) -> str:
    """Submits one job; returns its id (`--parsable` prints `id[;cluster]`)."""
    env = {**os.environ, **job.env}
    out = subprocess.run(job.command(), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch failed for {job.stage} ({out.returncode}): {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def show(job: Job, shown: set[Path]) -> str:
    """A dry run's account of a job: the command line with its environment, and the script the first time."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in job.env.items())
    cmd = " ".join(shlex.quote(a) for a in job.command())
    text = f"# --- {job.stage}\n{env} \\\n  {cmd}\n"
    if job.script not in shown:
        shown.add(job.script)
        text += f"# {job.script}:\n{job.script.read_text()}"
    return text


def _submit_stage(
    cfg: DictConfig, paths: Paths, deps: list[str], queued: list[str] | None, shown: set[Path]
) -> list[Job]:
    """Writes the stage's resolved config and submits its jobs (ids appended to `queued`); `queued=None`
    (a dry run) prints them instead (scripts not yet in `shown` in full) and writes nothing."""
    jobs = stage_jobs(cfg, paths, deps)
    if queued is not None:
        config_file = jobs[0].env["DISTILL_STAGE_CONFIG"]
        atomic_write_text(config_file, OmegaConf.to_yaml(scrub_config(cfg, config_file)))
    for job in jobs:
        job.options = [o.replace("<array>", jobs[0].job_id or "<array>") for o in job.options]
        if queued is None:
            print(show(job, shown))
        else:
            job.job_id = sbatch(job)
            queued.append(job.job_id)
    return jobs


def submit_pipeline(
    cfg: DictConfig, names: list[str], resolve: Callable[[str], DictConfig], paths: Paths
) -> dict[str, list[str]]:
    """Submits `names` in order, each after the stages it needs; returns stage -> job ids.

    `resolve(name)` is the driver's resolution of one stage (distill.pipeline.resolve_stage), passed in
    so that submitting never imports the driver.
    """
    validate(cfg.cluster)
    dry_run = bool(cfg.cluster.dry_run)
    queued: list[str] | None = None if dry_run else []
    if not dry_run:
        (paths.run_dir / "slurm" / "logs").mkdir(parents=True, exist_ok=True)
    done: dict[str, list[Job]] = {}
    shown: set[Path] = set()
    try:
        for name in names:
            deps = [done[n][-1].job_id or f"<{n}>" for n in NEEDS.get(name, ()) if n in done]
            done[name] = _submit_stage(resolve(name), paths, deps, queued, shown)
    except BaseException:
        if queued:  # half a chain must not run: its jobs would work towards a failed submission
            subprocess.run(["scancel", *queued], capture_output=True)
        raise
    ids = {name: [j.job_id or "(dry run)" for j in jobs] for name, jobs in done.items()}
    print_table(cfg.run.name, ids, paths, dry_run)
    return ids


def print_table(run: str, ids: dict[str, list[str]], paths: Paths, dry_run: bool) -> None:
    """Stage -> job ids: what a user needs for squeue/scancel, and where each job's log will be."""
    what = "would submit (dry run)" if dry_run else "submitted"
    print(f"[distill] run {run}: {what} to Slurm; logs in {paths.run_dir / 'slurm' / 'logs'}")
    print(f"  {'stage':<10} job id")
    for name, jobs in ids.items():
        print(f"  {name:<10} {' '.join(jobs)}" + ("  (array, merge)" if len(jobs) == 2 else ""))
