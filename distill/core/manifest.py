"""Stage manifests: what a stage read, what it wrote, under which config, with which code.

A manifest is written last and atomically, so its presence means the stage finished; its `key` (a hash of
the stage's resolved config and its inputs' keys) decides whether a rerun can be skipped. Manifests chain:
each input records the key of the manifest that produced it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_json, sha256_file
from distill.core.paths import REPO_ROOT, Paths

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformers", "trl", "accelerate", "deepspeed", "datasets", "vllm", "math-verify")


@dataclass
class Manifest:
    stage: str
    key: str
    config: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def write(self, directory: str | Path, name: str = MANIFEST) -> Path:
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.versions = self.versions or versions()
        path = Path(directory) / name
        atomic_write_json(path, asdict(self))
        return path

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable manifest ({e})") from None
        return cls(**data)

    def output_path(self, name: str) -> Path:
        return Path(self.outputs[name]["path"])


def _drop(d: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(d.get(head), dict):
        _drop(d[head], rest)
    elif not rest:
        d.pop(head, None)


def config_key(config: dict[str, Any], input_keys: list[str], exclude: set[str] = frozenset()) -> str:
    """A stable hash of what determines a stage's outputs: its config (less `exclude`) and its inputs."""
    cfg = json.loads(json.dumps(config, sort_keys=True, default=str))
    for dotted in exclude:
        _drop(cfg, dotted)
    blob = json.dumps({"config": cfg, "inputs": sorted(input_keys)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_input(name: str, path: str | Path, key: str | None = None) -> dict[str, Any]:
    """An input record; a plain file's key is its content hash, a stage output's key its manifest's key."""
    digest = sha256_file(path)
    return {"name": name, "path": str(path), "sha256": digest, "key": key or digest[:16]}


def stage_key(
    sections: dict[str, Any],
    input_keys: list[str],
    not_in_key: Iterable[str] = (),
    under: Iterable[str] = ("stage",),
    neutral: dict[str, Any] | None = None,
) -> str:
    """The one way a stage, a train phase or an eval model is keyed: the config sections that decide its
    outputs (DictConfigs resolved), less the `not_in_key` fields (how it runs, not what it writes) under
    each section named in `under`, plus the keys of its inputs.

    `neutral` maps fields added after a release (dotted, from the section names) to the value that does
    what the release before did; a field holding it is left out, so a finished run of an unchanged config
    stays finished across the upgrade instead of regenerating (tests/test_keys.py pins this)."""
    plain = {
        k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig) else v
        for k, v in sections.items()
    }
    drop = {f"{u}.{k}" for u in under for k in not_in_key}
    drop |= {path for path, value in (neutral or {}).items() if _get(plain, path) == value}
    return config_key(plain, input_keys, drop)


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


_MISSING = object()


def upstream(paths: Paths, stage: str, needed_by: str) -> Manifest:
    """The finished manifest of an earlier stage of this run: the one reader every stage uses, so a missing
    one always says which stage to run first."""
    path = paths.stage_dir(stage) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: {needed_by} needs the {stage} stage's output; run `python -m distill stage={stage}` first"
        )
    return Manifest.read(path)


def finished(directory: str | Path, key: str, name: str = MANIFEST) -> Manifest | None:
    """The manifest in `directory` if it exists and was written under `key`, else None."""
    path = Path(directory) / name
    if not path.exists():
        return None
    m = Manifest.read(path)
    return m if m.key == key else None


def up_to_date(directory: str | Path, key: str, force: bool, label: str) -> Manifest | None:
    """The finished manifest a stage (or phase, or eval model) can reuse, announced in one line; None when it
    must run: no manifest, another key, or `force=true`."""
    m = None if force else finished(directory, key)
    if m is not None:
        print(f"[distill] {label}: up to date (key {key}), skipping")
    return m


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"git": git_sha()}
    for pkg in PACKAGES:
        for dist in (pkg, f"{pkg}-cpu"):
            try:
                out[pkg] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def model_fingerprint(path: Path, name: str, revision: str | None = None, label: str = "model") -> dict:
    """Identity of a model: its config and weights. Weights are hashed up to 1 GiB in all (a retrained
    checkpoint has the same file sizes); beyond that, names, sizes and mtimes stand in for the bytes."""
    h = hashlib.sha256(f"{name}|{revision}".encode())
    if path.is_dir():
        files = sorted(path.iterdir())
        weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt")]
        small = sum(f.stat().st_size for f in weights) <= 1 << 30
        for f in files:
            if f.suffix in (".json", ".jinja", ".txt", ".model") or (small and f in weights):
                h.update(f.name.encode() + f.read_bytes())
            elif f in weights:
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return {"name": label, "path": str(path), "sha256": None, "key": h.hexdigest()[:16]}
