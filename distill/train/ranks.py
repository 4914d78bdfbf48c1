"""Starting one train phase's ranks and reading their outcome: the accelerate (or srun) launch from the
phase plan, the half-written checkpoints swept before a resume, and the first failing rank's own
exception in the error (torchrun's ChildFailedError only says that a child failed).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from distill.cluster.launch import LaunchSpec, accelerate_command, launch_env, log_tail, run_ranks
from distill.train.recovery import clear_rank_errors, first_rank_error, sweep_incomplete

log = logging.getLogger(__name__)
WORKER = "distill.train.worker"


def reset_if_stale(out: Path, key: str, force: bool) -> None:
    """A phase dir left by another key (or forced) is cleared: its checkpoints must not be resumed."""
    plan_file = out / "plan.json"
    stale = plan_file.exists() and json.loads(plan_file.read_text()).get("key") != key
    if out.exists() and (force or stale):
        log.info("train: clearing %s (%s)", out, "force" if force else "config changed")
        shutil.rmtree(out)


def launch_phase(cfg: DictConfig, plan: dict, out: Path) -> dict:
    """Runs the ranks for one phase; returns the worker's train_log.json."""
    g = cfg.stage
    spec = LaunchSpec(
        num_processes=g.num_processes,
        strategy=g.strategy,
        use_cpu=plan["use_cpu"],
        num_machines=g.num_machines,
        main_process_port=g.main_process_port,
        threads_per_rank=g.threads_per_rank,
    )
    env = launch_env(spec)
    env["WANDB_MODE"] = cfg.wandb.mode if plan["wandb"]["enabled"] else "disabled"
    env["WANDB_DIR"] = plan["wandb"]["dir"]
    (out / "train_log.json").unlink(missing_ok=True)
    clear_rank_errors(out)
    for ckpt, why in sweep_incomplete(out / "checkpoints"):
        print(
            f"[distill] train {plan['phase']}: removed half-written {ckpt.name} ({why}); resuming before it"
        )
    args = ["--config", str(out / "plan.json")]
    if spec.num_machines > 1:
        from distill.cluster.launch import srun_ranks_command

        cmd = srun_ranks_command(spec, WORKER, args, out)
    else:
        cmd = accelerate_command(spec, WORKER, args)
    rc = run_ranks(cmd, env, out / "ranks.log")
    if rc != 0:
        raise RuntimeError(rank_failure(plan["phase"], rc, out))
    return json.loads((out / "train_log.json").read_text())


def rank_failure(phase: str, rc: int, out: Path) -> str:
    """The message of a failed phase: the first failing rank's own exception when one was recorded (the
    launcher's ChildFailedError says only that a child failed), else the end of the ranks' log."""
    log_file = out / "ranks.log"
    err = first_rank_error(out)
    if err is None:
        return f"train {phase}: ranks exited with {rc}; log {log_file}:\n{log_tail(log_file)}"
    return (
        f"train {phase}: rank {err['rank']} (host {err['host']}) failed first: {err['type']}: {err['message']}\n"
        f"its traceback: {err['file']}; all ranks' output: {log_file} (launcher exit {rc})"
    )
