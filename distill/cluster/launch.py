"""Building and running the `accelerate launch` command that starts training ranks.

The driver (Hydra) never runs inside the ranks: it writes a resolved config file and starts a plain-python
worker module under `accelerate launch`. The launcher is always accelerate's torchrun path (`--multi_gpu`),
also on CPU and also for DeepSpeed: DeepSpeed itself is switched on inside the worker from the config file
(`SFTConfig(deepspeed=...)`), which is the one route that gives a correct world size on CPU ranks
(`accelerate launch --cpu` silently starts one process; `--use_deepspeed` without a GPU falls back to it).
The Slurm launcher reuses `accelerate_command` with `num_machines`/`machine_rank`/`main_process_ip`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.core.io import atomic_write_text
from distill.core.paths import REPO_ROOT
from distill.core.report import RankConsole

STRATEGIES = ("ddp", "zero1", "zero2", "zero3")
DEEPSPEED_DIR = REPO_ROOT / "conf" / "deepspeed"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LaunchSpec:
    """Where and how many ranks: one machine here; the Slurm launcher sets the multi-node fields."""

    num_processes: int = 2  # total over all machines
    strategy: str = "ddp"
    use_cpu: bool = True
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str = "127.0.0.1"
    main_process_port: int | None = None
    threads_per_rank: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy={self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.num_processes < 1 or self.num_processes % self.num_machines:
            raise ValueError(
                f"num_processes={self.num_processes} must be a positive multiple of num_machines={self.num_machines}"
            )


def deepspeed_config_path(strategy: str) -> Path | None:
    """The shipped DeepSpeed config of a strategy (`zero2` -> conf/deepspeed/zero2.json); None for DDP."""
    if strategy == "ddp":
        return None
    path = DEEPSPEED_DIR / f"{strategy}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no DeepSpeed config for strategy {strategy!r}")
    return path


def free_port() -> int:
    """A free TCP port for the rendezvous: two runs on one machine must not collide on 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(spec: LaunchSpec, module: str, args: Sequence[str]) -> list[str]:
    """`python -m accelerate.commands.launch ... -m <module> <args>` (the venv's own accelerate)."""
    port = spec.main_process_port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(spec.num_processes),
        "--num_machines",
        str(spec.num_machines),
        "--machine_rank",
        str(spec.machine_rank),
        "--main_process_ip",
        spec.main_process_ip,
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",  # precision comes from the training config (bf16 flag), not from the launcher
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        str(spec.threads_per_rank),
    ]
    if spec.num_processes > 1:
        cmd.append("--multi_gpu")  # torchrun; one process uses accelerate's simple launcher
    return cmd + ["--module", module, *args]


def launch_env(spec: LaunchSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """The ranks' environment: CPU/gloo and DeepSpeed switches, one thread per rank, a shared op cache."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = str(spec.threads_per_rank)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # DeepSpeed compiles its CPU comm op on first use (~45 s): keep it in a per-user cache, paid once.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "distill" / "torch_extensions"))
    for k in ("ACCELERATE_USE_CPU", "ACCELERATE_USE_DEEPSPEED"):
        env.pop(k, None)
    if spec.use_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if spec.strategy != "ddp":
        # DeepSpeed picks its CPU accelerator itself; ACCELERATE_USE_CPU would make accelerate skip DeepSpeed.
        env["ACCELERATE_USE_DEEPSPEED"] = "true"
    elif spec.use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"  # without it, DDP on CPU silently runs N world-1 trainings
    return env


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies.

    torchrun starts ranks in new sessions, so killing the driver's process group (Ctrl-C twice, a test's
    SIGKILL) would otherwise leave orphaned ranks training and writing checkpoints into a phase dir that a
    rerun is resuming from. Each link of driver -> accelerate -> rank calls this.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


def run_ranks(
    cmd: list[str], env: dict[str, str], log_path: Path, console: Callable[[bytes], None] | None = None
) -> int:
    """Runs the launcher, copying all its output to `log_path`; returns the exit code.

    The console gets what `console` shows of each line: by default (`RankConsole`) the ranks' progress
    as one bar and their `[distill]` lines, not TRL's loss dicts or the libraries' start-up notices
    (everything with log.level=debug)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    show = console or RankConsole()
    with open(log_path, "ab") as log_f:
        log_f.write(("$ " + " ".join(cmd) + "\n").encode())
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_f.write(line)
                log_f.flush()
                show(line)
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if isinstance(show, RankConsole):
                show.close()


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a rank log, for an error message that says why training failed."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def srun_ranks_command(spec: LaunchSpec, module: str, args: list[str], out: Path) -> list[str]:
    """One `distill.cluster.job node-launch` per node of this allocation, each starting its node's ranks.

    `--kill-on-bad-exit`: when one node's launcher fails (a rank died), srun kills the others, so the
    step and the train stage fail at once instead of the survivors waiting in a collective until timeout.
    """
    have = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 0)
    if not os.environ.get("SLURM_JOB_ID") or have < spec.num_machines:
        raise RuntimeError(
            f"train.num_machines={spec.num_machines} needs a Slurm allocation of that many nodes (this one has "
            f"{have}): submit with cluster=slurm cluster.stages.train.nodes={spec.num_machines}"
        )
    atomic_write_text(out / "launch.json", json.dumps({"spec": asdict(spec), "module": module, "args": args}))
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    cmd = ["srun", f"--nodes={spec.num_machines}", f"--ntasks={spec.num_machines}", "--ntasks-per-node=1"]
    cmd += ["--kill-on-bad-exit=1", "--label", *([f"--cpus-per-task={cpus}"] if cpus else [])]
    launcher = [
        sys.executable,
        "-m",
        "distill.cluster.job",
        "node-launch",
        "--spec",
        str(out / "launch.json"),
    ]
    return cmd + launcher
