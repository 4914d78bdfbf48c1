"""Shared fixtures: offline settings, the toy world, and in-process composition of the real configs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for k, v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}.items():
    os.environ.setdefault(k, v)

TOY = REPO / "data" / "toy"


@pytest.fixture(scope="session", autouse=True)
def _vllm_cache(tmp_path_factory) -> None:
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))


# pytest-xdist (`make test` runs `-n 2 --dist loadfile`): a test file runs on one worker, so its module and
# session fixtures are built once. The longest files go first (measured, slowest first), so that no worker
# starts one near the end.
FIRST = ["test_e2e", "test_slurm", "test_train_dist", "test_toy_harmony", "test_vllm", "test_on_policy"]


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    rank = {g: i for i, g in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(FIRST)))  # stable: file order otherwise


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> tuple[Path, str, float]:
    """The whole default pipeline (`python -m distill`, experiment=toy) in a fresh run root: (run dir, what
    the user's console showed, wall seconds); tests/test_e2e.py checks it."""
    root = tmp_path_factory.mktemp("e2e")
    t0 = time.monotonic()
    out = subprocess.run(
        distill_cmd(f"run.root={root}"), cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return root / "toy", out.stdout + out.stderr, wall


@contextmanager
def hydra_ctx() -> Iterator[None]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from distill.pipeline import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


def compose_root(overrides: list[str]):
    from hydra import compose

    return compose(config_name="config", overrides=overrides)


def stage_config(stage: str, overrides: list[str]):
    """The root config with `stage` resolved as the driver resolves it (schema < YAML < experiment < CLI)."""
    from distill.pipeline import resolve_stage

    with hydra_ctx():
        return resolve_stage(compose_root(overrides), stage, overrides)


def run_distill(overrides: list[str]):
    """Runs the pipeline in-process exactly as `python -m distill <overrides>` would (same driver)."""
    from distill.pipeline import run_pipeline

    with hydra_ctx():
        cfg = compose_root(overrides)
        return run_pipeline(cfg, overrides, base=REPO)


def distill_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "distill", *overrides]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def start_vllm_server(args: list[str], port: int, timeout: float = 240) -> Iterator[str]:
    """A real `vllm.entrypoints.openai.api_server` on 127.0.0.1; yields its /v1 URL, stops it after."""
    log = Path(tempfile.mkdtemp()) / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *args,
        "--enforce-eager",  # CPU: torch.compile doubles start-up for no decode speed-up (distill.core.config)
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    with serving(proc, f"{url}/models", log, "vLLM server", time.monotonic() + timeout, grace=30):
        yield url


@contextmanager
def serving(
    proc: subprocess.Popen, ready_url: str, log: Path, what: str, deadline: float, grace: float
) -> Iterator[None]:
    """Until `ready_url` answers (failing at once with the log's tail if the server exits, or at
    `deadline`), then the body; the server is terminated after it, killed if it outlives `grace`."""
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{what} exited: {log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise TimeoutError(f"{what} not ready: {log.read_text()[-3000:]}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()


def procs_with(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (e.g. orphaned ranks of a killed run)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and text in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def output_rows(stage_dir: Path, name: str, schema=None, columns: list[str] | None = None) -> list[dict]:  # noqa: ANN001
    """The rows a finished stage wrote under output `name`, read as its consumers read them (its shards,
    through its manifest)."""
    from distill.core.manifest import Manifest
    from distill.core.shards import iter_problem_order

    m = Manifest.read(Path(stage_dir) / "manifest.json")
    rows = list(iter_problem_order(m.outputs[name], columns))
    return [schema.check(r, f"{stage_dir}/{name}") for r in rows] if schema else rows


def weights(model_dir: Path) -> dict:
    """A saved model's tensors by name (model.safetensors), for tensor-for-tensor comparisons."""
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def output_bytes(stage_dir: Path, name: str) -> dict[str, bytes]:
    """A stage output's files, by name: what "byte-identical output" compares for a sharded dataset."""
    from distill.core.manifest import Manifest
    from distill.core.shards import dataset_files

    m = Manifest.read(Path(stage_dir) / "manifest.json")
    return {p.name: p.read_bytes() for p in dataset_files(m.outputs[name])}


@pytest.fixture(scope="module")
def served(toy_run, tmp_path_factory):
    """The export's serve.sh exactly as written, from another directory, with the venv on PATH (as an
    activated venv has it) and only PORT set; yields (base URL, start-up seconds, process, log)."""
    out = toy_run[0] / "export"
    log = tmp_path_factory.mktemp("serve") / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "VLLM_CPU_KVCACHE_SPACE")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PORT=str(port))
    t0 = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [str(out / "serve.sh")], cwd=log.parent, env=env, stdout=f, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/v1"
    with serving(proc, f"{url}/models", log, "serve.sh (600 s)", t0 + 600, grace=60):
        startup = time.monotonic() - t0
        print(f"[e2e] serve.sh ready in {startup:.1f} s")
        yield url, startup, proc, log
