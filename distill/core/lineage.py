"""`python -m distill verify run.name=X [run.root=R]`: re-hash a run and walk its lineage; exit 1 on any mismatch.

For every manifest of the run (each stage's, each train phase's, each eval model's) it checks that
- every output is on disk as recorded: a file's sha256 (and rows), a directory's per-file digests;
- the key is recomputable: the stored `keyed` blob hashes to `key`, it names only the manifest's inputs,
  and the stored config agrees with the config inside the blob;
- every input resolves: a stage output to the manifest of this run that wrote it (same key, same
  digest), a file outside the run (problems, eval sets, external traces) to its recorded sha256, a model
  to its recomputed fingerprint.
Then it prints the chain from the last stage back to the problems. A run directory copied elsewhere is
verified as the copy: paths recorded under the original run directory are read under the copy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.config import STAGES, RunConfig
from distill.core.io import sha256_file
from distill.core.manifest import MANIFEST, Manifest, key_of, model_fingerprint, output_mismatches
from distill.core.paths import Paths


@dataclass
class Report:
    """What verify found: per manifest label, its problems; `notes` are checks that could not be made."""

    run_dir: Path
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    origins: list[Path] = field(default_factory=list)
    checked: int = 0

    def fail(self, label: str, msg: str) -> None:
        self.problems.setdefault(label, []).append(msg)

    def local(self, p: str | Path) -> Path:
        """A recorded path, read under the run being verified when it was recorded under the original."""
        p = Path(p)
        for orig in self.origins:
            if p.is_relative_to(orig):
                return self.run_dir / p.relative_to(orig)
        return p


def manifests(run_dir: Path) -> dict[str, Manifest]:
    """label (`generate`, `train/phase1`, `eval/teacher`) -> manifest, stage order, shard parts left out."""
    out = {}
    for stage in STAGES:
        sdir = run_dir / stage
        if (sdir / MANIFEST).exists():
            out[stage] = Manifest.read(sdir / MANIFEST)
        for sub in sorted(sdir.glob(f"*/{MANIFEST}")) if sdir.is_dir() else ():
            if sub.parent.name != "parts":
                out[f"{stage}/{sub.parent.name}"] = Manifest.read(sub)
    return out


def _origins(run_dir: Path, found: dict[str, Manifest]) -> list[Path]:
    """Where the run was when its manifests were written (an output path minus its stage-relative tail)."""
    origins = set()
    for label, m in found.items():
        tail = Path(label).parts
        for rec in m.outputs.values():
            for parent in Path(rec.get("path", "")).parents:
                if parent.parts[-len(tail) :] == tail:
                    origins.add(Path(*parent.parts[: -len(tail)]))
                    break
    return sorted((o for o in origins if o != run_dir), key=lambda o: -len(o.parts))


def _subset_mismatch(keyed: Any, stored: Any, where: str) -> str | None:
    """The first value of the key's config that the stored config contradicts (dropped fields are fine)."""
    if isinstance(keyed, dict) and isinstance(stored, dict):
        for k, v in keyed.items():
            if k in stored and (bad := _subset_mismatch(v, stored[k], f"{where}.{k}")):
                return bad
        return None
    return None if keyed == stored else f"{where}: keyed {keyed!r}, stored {stored!r}"


def check_key(label: str, m: Manifest, r: Report) -> None:
    if not m.keyed:
        r.fail(label, "no `keyed` record: the key cannot be recomputed (written before lineage records)")
        return
    if (again := key_of(m.keyed)) != m.key:
        r.fail(label, f"key {m.key} is not the hash of its recorded config and inputs ({again})")
    stray = set(m.keyed.get("inputs", [])) - {i.get("key") for i in m.inputs}
    if stray:
        r.fail(label, f"key hashes inputs the manifest does not list: {sorted(stray)}")
    stage_cfg = (m.keyed.get("config") or {}).get("stage")
    if isinstance(stage_cfg, dict) and m.config.get("name") == stage_cfg.get("name"):
        if bad := _subset_mismatch(stage_cfg, m.config, "config"):
            r.fail(label, f"stored config differs from the keyed one: {bad}")


def check_outputs(label: str, m: Manifest, r: Report) -> None:
    for name, rec in m.outputs.items():
        if not isinstance(rec, dict) or "path" not in rec:
            continue
        if rec.get("sha256") is None:
            r.fail(label, f"output {name!r}: no sha256 recorded")
            continue
        local = {**rec, "path": str(r.local(rec["path"]))}
        for bad in output_mismatches(local):
            r.fail(label, f"output {name!r} ({local['path']}): {bad}")


def _producer(key: str, found: dict[str, Manifest]) -> tuple[str, Manifest, str | None] | None:
    """The manifest of this run an input key names (`key`, or `key:output` for one output of it)."""
    head, _, out = key.partition(":")
    for label, m in found.items():
        if m.key == head:
            return label, m, out or None
    return None


def check_input(label: str, i: dict, found: dict[str, Manifest], r: Report) -> str | None:
    """Resolves one input; returns the label of the manifest that produced it, if any."""
    name, key = i.get("name"), str(i.get("key"))
    if hit := _producer(key, found):
        up_label, up, out = hit
        if out is None:  # the whole manifest's key: the output is the one at the recorded path, if any
            out = next((n for n, o in up.outputs.items() if o.get("path") == i.get("path")), None)
        rec = up.outputs.get(out) if out else None
        if ":" in key and rec is None:
            r.fail(label, f"input {name!r}: {up_label} has no output {out!r}")
        elif rec and i.get("sha256") and rec.get("sha256") != i["sha256"]:
            r.fail(label, f"input {name!r}: sha256 {str(i['sha256'])[:12]} is not {up_label}'s {out}")
        return up_label
    if "model" in i:  # a model fingerprint: recomputed from the weights as they are now
        fp = model_fingerprint(r.local(i["path"]), i["model"], i.get("revision"), i.get("name", "model"))
        if fp["key"] != key:
            r.fail(label, f"input {name!r} ({i['path']}): model fingerprint {fp['key']}, recorded {key}")
        return None
    path, digest = r.local(i.get("path", "")), i.get("sha256")
    if isinstance(digest, str) and key != digest[:16]:  # keyed by a manifest, not by its own bytes
        r.fail(label, f"input {name!r} (key {key}): no manifest of this run has that key (stale or replaced)")
    elif isinstance(digest, str) and path.is_file():
        if (digest := sha256_file(path)) != i["sha256"]:
            r.fail(label, f"input {name!r} ({path}): sha256 {digest[:12]}, recorded {i['sha256'][:12]}")
    elif i.get("sha256") is None and "|" in str(i.get("path")):
        r.notes.append(f"{label}: input {name!r} is a dataset ({i['path']}): checked by name only")
    else:
        r.fail(label, f"input {name!r} (key {key}): no manifest of this run wrote it and no file to re-hash")
    return None


def verify(run_dir: Path) -> tuple[Report, list[str]]:
    """All checks on one run directory, and the chain printed from the last stage back to the problems."""
    found = manifests(run_dir)
    r = Report(run_dir, checked=len(found))
    r.origins = _origins(run_dir, found)
    if not found:
        r.fail("run", f"{run_dir}: no stage manifests")
        return r, []
    edges: dict[str, list[str]] = {}
    for label, m in found.items():
        check_key(label, m, r)
        check_outputs(label, m, r)
        edges[label] = [u for i in m.inputs if (u := check_input(label, i, found, r))]
    lines: list[str] = []

    shown: set[str] = set()

    def walk(label: str, depth: int, seen: set[str]) -> None:
        m, bad = found[label], r.problems.get(label)
        if label in shown:  # a shared upstream (curate under every phase) is printed once
            lines.append(f"{'  ' * depth}{label} {m.key} (above)")
            return
        shown.add(label)
        lines.append(f"{'  ' * depth}{label} {m.key} {'FAIL' if bad else 'ok'}")
        lines.extend(f"{'  ' * depth}  ! {p}" for p in bad or [])
        for i in m.inputs:
            if _producer(str(i.get("key")), found) is None:
                lines.append(
                    f"{'  ' * (depth + 1)}<- {i.get('name')} {str(i.get('sha256') or i.get('key'))[:16]}"
                )
        for up in dict.fromkeys(edges[label]):
            if up not in seen:
                walk(up, depth + 1, seen | {up})

    tops = [lbl for lbl in found if not any(lbl in ups for ups in edges.values())]
    for top in tops:
        walk(top, 0, {top})
    return r, lines


def main(argv: list[str]) -> int:
    """`verify run.name=X run.root=R` (or `--run-dir PATH`); prints the chain, exits 1 on any problem."""
    run = RunConfig()
    run_dir = None
    args = iter(argv)
    for a in args:
        if a == "--run-dir":
            run_dir = Path(next(args))
        elif a.startswith("run.name="):
            run.name = a.split("=", 1)[1]
        elif a.startswith("run.root="):
            run.root = a.split("=", 1)[1]
        else:
            print(
                f"verify: unknown argument {a!r}; use run.name=X [run.root=R] or --run-dir PATH",
                file=sys.stderr,
            )
            return 2
    run_dir = run_dir or Paths.for_run(run.root, run.name).run_dir
    report, lines = verify(run_dir.resolve())
    print(f"[distill] verify {run_dir}:")
    print("\n".join(lines))
    for note in report.notes:
        print(f"  note: {note}")
    n = sum(len(v) for v in report.problems.values())
    if n:
        print(f"[distill] verify: {n} problem(s) in {len(report.problems)} manifest(s)", file=sys.stderr)
        for label, probs in report.problems.items():
            for p in probs:
                print(f"  {label}: {p}", file=sys.stderr)
        return 1
    print(f"[distill] verify: {report.checked} manifests ok")
    return 0
