"""W&B tracking: offline runs grouped by run name, outputs as artifacts by reference, lineage, no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from distill.core.config import DistillConfig
from distill.core.manifest import Manifest
from distill.core.paths import Paths
from distill.core.tracking import log_stage_outputs, scrub


def wandb_logs(wandb_dir: Path, runs: int, needle: bytes, timeout: float = 30) -> list[bytes]:
    """The offline runs' transaction logs, once each holds `needle`: wandb-core writes them asynchronously,
    so a log can trail `run.finish()` by a moment."""
    deadline = time.monotonic() + timeout
    while True:
        logs = [p.read_bytes() for p in sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))]
        if (len(logs) == runs and all(needle in b for b in logs)) or time.monotonic() > deadline:
            assert len(logs) == runs, f"{len(logs)} offline runs in {wandb_dir}, expected {runs}"
            return logs
        time.sleep(0.5)


def test_scrub_drops_credentials_but_keeps_env_var_names():
    cfg = {"engine": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "n": 2}, "hf_token": "hf_x"}
    assert scrub(cfg) == {"engine": {"api_key_env": "OPENAI_API_KEY", "n": 2}}


def test_stage_outputs_become_artifacts_with_lineage(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.structured(DistillConfig)
    cfg.run.name = "trk"
    paths = Paths.for_run(str(tmp_path), "trk", tmp_path)
    data = tmp_path / "samples.jsonl"
    data.write_text('{"a": 1}\n')
    gen = Manifest(stage="generate", key="k-gen", config={"api_key": "sk-secret"}, metrics={"rows": 1})
    log_stage_outputs(cfg, paths, gen, "dataset", {"samples.jsonl": data})
    cur = Manifest(stage="curate", key="k-cur", config={}, inputs=[{"name": "samples", "key": "k-gen"}])
    log_stage_outputs(cfg, paths, cur, "dataset", {"phase1": data})
    reg = json.loads((paths.run_dir / "wandb" / "artifacts.json").read_text())
    assert reg == {"k-gen": "trk-generate", "k-cur": "trk-curate"}
    logs = wandb_logs(paths.run_dir / "wandb", 2, b"MANIFEST_MD5")
    cur_log = next(b for b in logs if b"trk-curate" in b)
    assert b"key-k-cur" in cur_log and b"k-gen" in cur_log  # its alias, and its input's key in metadata
    assert not any(b"sk-secret" in b for b in logs)
