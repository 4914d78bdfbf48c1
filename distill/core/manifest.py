"""Stage manifests: what a stage read, what it wrote, under which config, with which code.

A manifest is written last and atomically, so its presence means the stage finished; its `key` (a hash of
the stage's resolved config and its inputs' keys) decides whether a rerun can be skipped. Manifests chain:
each input records the key of the manifest that produced it.

Lineage is checkable from the manifests alone: `Manifest.write` records the sha256 of every output (a
file's digest, or a directory's per-file digests), so no stage can forget to; a key made by `stage_key` /
`config_key` carries the exact blob it hashes, which the manifest stores as `keyed`, so the key can be
recomputed; and configs pass through the one scrubber (`core.secrets`) before they are hashed or written,
so a rotated API key neither changes a key nor lands in a file. A reader checks an upstream output against
its manifest (`checked_output`) before using it: a truncated or edited file fails with both numbers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill.core.io import TEMP_SUFFIX, atomic_write_json, count_rows, sha256_file
from distill.core.paths import REPO_ROOT, Paths
from distill.core.secrets import scrub

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformers", "trl", "accelerate", "deepspeed", "datasets", "vllm", "math-verify")
REQUIRED = ("stage", "key", "config", "outputs")


class Key(str):
    """A stage key that remembers the blob it is the hash of (`material`), for the manifest to store."""

    material: dict[str, Any]

    def __new__(cls, digest: str, material: dict[str, Any] | None = None) -> Key:
        k = super().__new__(cls, digest)
        k.material = material
        return k


class InputMismatch(ValueError):
    """An upstream file that is not what its manifest says it wrote (truncated, edited, replaced)."""


def key_of(material: dict[str, Any]) -> str:
    """The hash behind every key; `verify` recomputes it from a manifest's `keyed`."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def tree_sha256(path: Path) -> dict[str, str]:
    """Per-file digests of a directory (relative path -> sha256), hidden and temp files left out."""
    out = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if f.is_file() and not any(p.startswith(".") for p in rel.parts) and not f.name.endswith(TEMP_SUFFIX):
            out[rel.as_posix()] = sha256_file(f)
    return out


def digest_of(path: Path) -> str | dict[str, str] | None:
    """A file's sha256, a directory's per-file digests, None when nothing is there."""
    return sha256_file(path) if path.is_file() else tree_sha256(path) if path.is_dir() else None


def output_mismatches(rec: dict[str, Any]) -> list[str]:
    """How an output on disk differs from its manifest record: rows and sha256, both numbers named.

    A directory record lists files (a record may list only some, e.g. export's weights): each must be
    there unchanged; files added later are not compared, they are not what the stage wrote."""
    path = Path(rec["path"])
    if not path.exists():
        return ["missing"]
    want = rec.get("sha256")
    if isinstance(want, dict):
        out = []
        for f in sorted(want):
            if not (path / f).is_file():
                out.append(f"{f}: missing (manifest sha256 {want[f][:12]})")
            elif (digest := sha256_file(path / f)) != want[f]:
                rows = {s["file"]: s["rows"] for s in rec.get("shards", [])}.get(f)
                if rows is not None and (have := _rows_or_why(path / f)) != rows:
                    out.append(f"{f}: rows: manifest {rows}, file {have}")
                out.append(f"{f}: sha256 manifest {want[f][:12]}, file {digest[:12]}")
        return out
    got = sha256_file(path) if path.is_file() else None
    if isinstance(want, str) and got == want:
        return []
    out = []
    rows = rec.get("rows")
    if isinstance(rows, int) and got is not None and path.suffix in (".jsonl", ".parquet"):
        if (have := count_rows(path)) != rows:
            out.append(f"rows: manifest {rows}, file {have}")
    if isinstance(want, str):
        out.append(f"sha256: manifest {want[:12]}, file {got[:12] if got else '(not a file)'}")
    return out


def _rows_or_why(path: Path) -> int | str:
    try:
        return count_rows(path)
    except Exception as e:  # noqa: BLE001 (a damaged file is reported, whatever the reader says)
        return f"unreadable ({type(e).__name__})"


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
    # The exact blob the key hashes ({"config": ..., "inputs": [...]}): the key is recomputable from it.
    keyed: dict[str, Any] | None = None

    def write(self, directory: str | Path, name: str = MANIFEST) -> Path:
        """Writes the manifest last: each output's sha256 is taken here (files that already record one
        keep it), configs are scrubbed, and the key's blob is stored with it."""
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.versions = self.versions or versions()
        if self.keyed is None and isinstance(self.key, Key):
            self.keyed = self.key.material
        for rec in self.outputs.values():
            if isinstance(rec, dict) and rec.get("path") and rec.get("sha256") is None:
                rec["sha256"] = digest_of(Path(rec["path"]))
        path = Path(directory) / name
        atomic_write_json(path, scrub(asdict(self) | {"key": str(self.key)}))
        self.source = path
        return path

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable manifest ({e})") from None
        missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(
                f"{path}: manifest has no {', '.join(repr(k) for k in missing)}: it was not written by a "
                "finished stage (or was edited); rerun that stage with force=true"
            )
        names = {f.name for f in fields(cls)}
        m = cls(**{k: v for k, v in data.items() if k in names})
        m.source = path
        return m

    def output_path(self, name: str) -> Path:
        if name not in self.outputs or "path" not in (self.outputs[name] or {}):
            raise KeyError(
                f"{getattr(self, 'source', self.stage)}: {self.stage} recorded no output {name!r} "
                f"(has: {', '.join(self.outputs) or 'none'}); rerun {self.stage} with force=true"
            )
        return Path(self.outputs[name]["path"])


def _drop(d: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(d.get(head), dict):
        _drop(d[head], rest)
    elif not rest:
        d.pop(head, None)


def config_key(config: dict[str, Any], input_keys: list[str], exclude: set[str] = frozenset()) -> str:
    """A stable hash of what determines a stage's outputs: its config (less `exclude`) and its inputs."""
    cfg = scrub(json.loads(json.dumps(config, sort_keys=True, default=str)))
    for dotted in exclude:
        _drop(cfg, dotted)
    material = {"config": cfg, "inputs": sorted(str(k) for k in input_keys)}
    return Key(key_of(material), material)


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


def checked_output(m: Manifest, name: str, needed_by: str) -> dict[str, Any]:
    """An upstream output's input record, after checking the file(s) against `m`'s record of them: a
    file cut short or edited since the stage wrote it is refused with the manifest's and the file's rows
    and sha256, and the way out (rerun the stage that wrote it)."""
    path = m.output_path(name)
    rec = m.outputs[name]
    where = getattr(m, "source", m.stage)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: {needed_by} needs {m.stage}'s output {name!r} (recorded in {where}) and it is gone; "
            f"rerun `python -m distill stage={m.stage.split('/')[0]} force=true`"
        )
    bad = output_mismatches(rec)
    if bad:
        raise InputMismatch(
            f"{path}: {needed_by} refuses {m.stage}'s output {name!r}: {'; '.join(bad)} (recorded in "
            f"{where}); the file changed after {m.stage} wrote it: restore it or rerun "
            f"`python -m distill stage={m.stage.split('/')[0]} force=true`"
        )
    shape = {
        k: rec[k] for k in ("format", "rows", "shards", "problem_order") if k in rec
    }  # a sharded dataset
    return {"name": name, "path": str(path), "sha256": rec.get("sha256"), "key": m.key, **shape}


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
    return {
        "name": label, "path": str(path), "sha256": None, "key": h.hexdigest()[:16],
        "model": name, "revision": revision,
    }  # fmt: skip
