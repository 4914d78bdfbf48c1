"""W&B tracking shared by the stages: offline unless configured, grouped by run, never a secret.

Files go under the run directory (`<run>/wandb/`), so a run's tracking data travels with its outputs and
an offline run can be synced later with `wandb sync <run>/wandb/offline-run-*`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distill.core.io import atomic_write_json
from distill.core.paths import Paths
from distill.core.secrets import scrub

__all__ = ["scrub", "wandb_run", "log_artifact", "log_stage_outputs"]


@contextmanager
def wandb_run(cfg: DictConfig, paths: Paths, job: str, config: dict | None = None) -> Iterator[Any]:
    """A W&B run named `<run>-<job>` in group `<run>`; yields None when tracking is disabled."""
    w = cfg.wandb
    if not w.enabled or w.mode == "disabled":
        yield None
        return
    import wandb

    paths.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=w.project,
        entity=w.entity,
        group=cfg.run.name,
        name=f"{cfg.run.name}-{job}",
        job_type=job,
        tags=list(w.tags),
        mode=w.mode,
        dir=str(paths.run_dir),
        config=scrub(config or {}),
        reinit="finish_previous",
    )
    try:
        yield run
    finally:
        run.finish()


REGISTRY = "artifacts.json"  # <run>/wandb/artifacts.json: manifest key -> artifact name, for lineage


def log_artifact(
    run: Any,
    run_dir: Path,
    name: str,
    kind: str,
    key: str,
    files: dict[str, str | Path],
    inputs: list[dict],
    metadata: dict | None = None,
) -> None:
    """Logs a stage's outputs as a W&B artifact (alias `key-<manifest key>`) with its lineage.

    Files are added by reference (`file://` URIs with checksums), not copied: a checkpoint or a trace file
    of many GB must not be duplicated into W&B's cache to get lineage. Inputs that an earlier stage of this
    run logged are marked as used (`use_artifact`) when online, which draws W&B's lineage graph; W&B
    refuses `use_artifact` offline, so there the inputs (names, paths, hashes, manifest keys) live in the
    artifact's metadata, which `wandb sync` uploads with it.
    """
    import wandb

    reg_path = Path(run_dir) / "wandb" / REGISTRY
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {}
    if not run.offline:
        for i in inputs:
            if i.get("key") in reg:
                run.use_artifact(f"{reg[i['key']]}:key-{i['key']}")
    meta = scrub({"key": key, "inputs": inputs, **(metadata or {})})
    art_name = _artifact_name(name)
    art = wandb.Artifact(art_name, type=kind, metadata=meta)
    for label, path in files.items():
        art.add_reference(Path(path).resolve().as_uri(), name=label)
    run.log_artifact(art, aliases=["latest", f"key-{key}"])
    reg[key] = art_name
    atomic_write_json(reg_path, reg)


def _artifact_name(name: str) -> str:
    """Artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:128]


def log_stage_outputs(
    cfg: DictConfig, paths: Paths, m: Any, kind: str, files: dict[str, str | Path], job: str | None = None
) -> None:
    """A stage without a W&B run of its own (generate, curate, export): one run in the group with the
    manifest's numeric metrics in its summary and the outputs as an artifact."""
    job = job or m.stage
    with wandb_run(cfg, paths, job=job, config={job: m.config}) as run:
        if run is None:
            return
        run.summary.update(_numeric(m.metrics))
        log_artifact(run, paths.run_dir, f"{cfg.run.name}-{job}", kind, m.key, files, m.inputs)


def _numeric(d: dict, prefix: str = "") -> dict:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _numeric(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out
