"""What a Slurm job runs: `python -m distill.cluster.job run|node-launch` (plain python, never Hydra).

`run` loads the resolved root config the submitter wrote (distill.cluster.slurm) and calls the stage function
directly, with the array task's shard applied for generate. It is safe to run again (requeue, resubmit):
every stage resumes from what it wrote or skips by its manifest.

`node-launch` is one srun task per node of a multi-node train step: it builds that node's
`accelerate launch` (machine rank from SLURM_NODEID, main address the first host of the job's node list)
and replaces itself with it, so srun sees the launcher's exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from distill.cluster.launch import LaunchSpec, accelerate_command, launch_env
from distill.core.checks import check_stage
from distill.core.paths import Paths
from distill.pipeline import load_resolved, run_locked

log = logging.getLogger("distill.cluster.job")


def _job_settings(cfg: DictConfig, paths: Paths, shard: int | None) -> None:
    """Per-job adjustments that change how the stage runs, never what it writes (none is in a config key)."""
    g = cfg.stage
    if shard is not None:
        if g.name not in ("generate", "curate"):
            raise ValueError(f"--shard is for generate and curate array tasks, not {g.name}")
        if not 0 <= shard < g.num_shards:
            raise ValueError(f"array task {shard} is outside {g.name}.num_shards={g.num_shards}")
        g.shard, g.workers = shard, 1
    elif g.name in ("generate", "curate") and g.num_shards > 1 and cfg.force:
        # The merge after a forced array: the tasks already regenerated every shard; forcing here would
        # clear them. Dropping the merged manifest is enough to merge again.
        (paths.stage_dir(g.name) / "manifest.json").unlink(missing_ok=True)
        cfg.force = False
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        cfg.force = False  # a requeued job resumes what its first run (forced or not) started
    workers = g.verify if g.name == "curate" else g if g.name == "eval" else None
    if workers is not None and workers.num_workers is None:
        workers.num_workers = len(os.sched_getaffinity(0))  # the cores Slurm gave this job, not the node's


def run_stage(config: str | Path, base: str | Path, shard: int | None = None) -> None:
    """The stage function itself, as the local driver calls it: same code path, same manifests and keys,
    the same range checks and the same run lock (this job is the stage's driver; an array task holds its
    shard's lock, a local generate worker too, while the process that started the workers holds the stage's)."""
    cfg = load_resolved(config)
    paths = Paths.for_run(cfg.run.root, cfg.run.name, base)
    _job_settings(cfg, paths, shard)
    check_stage(cfg)
    where = f"job {os.environ.get('SLURM_JOB_ID', '-')} on {os.environ.get('SLURMD_NODENAME', '-')}"
    print(f"[distill] {cfg.stage.name}{'' if shard is None else f' shard {shard}'}: {where}", flush=True)
    run_locked(cfg, paths)


def job_port(job_id: int, step_id: int) -> int:
    """The rendezvous port every node of one srun step derives alike (no free-port probe across nodes)."""
    return 20000 + (job_id * 16 + step_id) % 10000


def node_launch(spec_file: str | Path) -> None:
    """Execs this node's `accelerate launch`: the values only Slurm knows (node id, hosts) are filled in here."""
    d = json.loads(Path(spec_file).read_text())
    env = os.environ
    nodelist = ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]]
    hosts = subprocess.run(nodelist, capture_output=True, text=True, check=True).stdout.split()
    port = d["spec"]["main_process_port"] or int(env.get("DISTILL_MAIN_PROCESS_PORT") or 0)
    port = port or job_port(int(env["SLURM_JOB_ID"]), int(env.get("SLURM_STEP_ID") or 0))
    here = {"machine_rank": int(env["SLURM_NODEID"]), "main_process_ip": hosts[0], "main_process_port": port}
    spec = LaunchSpec(**d["spec"] | here)
    print(
        f"[distill] node-launch: node {env.get('SLURMD_NODENAME')} machine_rank {spec.machine_rank}/"
        f"{spec.num_machines} main {hosts[0]}:{port} ranks {spec.num_processes // spec.num_machines}",
        flush=True,
    )
    cmd = accelerate_command(spec, d["module"], d["args"])
    os.execvpe(cmd[0], cmd, launch_env(spec))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m distill.cluster.job", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one stage from its resolved config")
    r.add_argument("--config", required=True)
    r.add_argument("--base", required=True, help="the directory relative config paths are resolved against")
    r.add_argument("--shard", type=int, default=None, help="generate array task: the shard to generate")
    n = sub.add_parser("node-launch", help="start this node's training ranks (one srun task per node)")
    n.add_argument("--spec", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.cmd == "run":
        run_stage(a.config, a.base, a.shard)
    else:
        node_launch(a.spec)


if __name__ == "__main__":
    sys.exit(main())
