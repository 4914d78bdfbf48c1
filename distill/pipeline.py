"""The driver and the stage registry: resolves each stage's config and runs the stages in order.

A stage is a package `distill/<name>/` whose `stage` module defines `Config` (its typed schema) and
`run(cfg, paths) -> Manifest`; the registry imports it lazily, so `python -m distill stage=curate` starts
without importing vLLM or DeepSpeed.

A stage's config is layered: its schema < `conf/stage/<name>.yaml` < the experiment's `stages.<name>` <
the command line's `stage.*` overrides. Hydra composes the first two (and the experiment); the last two
layers are merged here, so that one experiment file can carry values for every stage of a pipeline run.
With `cluster=slurm` the same resolved configs are submitted as Slurm jobs instead (distill.cluster.slurm).

Every stage of the run is resolved and range-checked (distill.core.checks) before the first one starts,
and each stage runs holding its run lock (distill.core.lock): a second driver on the same run fails at
once, naming the holder. Under the lock, temp files that a killed atomic write left are swept.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from hydra import compose
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from distill.cluster.config import ClusterConfig, validate
from distill.core.checks import check_stage
from distill.core.config import STAGES, DistillConfig
from distill.core.io import sweep_temp_files
from distill.core.lock import RunLock, lock_path
from distill.core.logs import stage_log
from distill.core.manifest import Manifest
from distill.core.paths import Paths
from distill.core.plots import stage_pictures
from distill.core.run_report import write_report

log = logging.getLogger(__name__)
STAGE_MODULES: dict[str, str] = {name: f"distill.{name}.stage" for name in STAGES}


def stage_module(name: str) -> ModuleType:
    if name not in STAGE_MODULES:
        raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    return importlib.import_module(STAGE_MODULES[name])


def stage_runner(name: str) -> Callable:
    return stage_module(name).run


@dataclass
class RootConfig(DistillConfig):
    """The root schema with the cluster section typed (core leaves it Any: it never imports cluster)."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def register_configs() -> None:
    """Registers the root schema, the cluster schema and each stage's schema (each lives next to its code)."""
    cs = ConfigStore.instance()
    cs.store(name="distill_schema", node=RootConfig)
    cs.store(group="schema", name="cluster", node=ClusterConfig)
    for name in STAGES:
        cs.store(group="schema/stage", name=name, node=_schema_node(stage_module(name).Config))


def _entry_metadata(schema: type) -> dict[str, dict]:
    """The schema's dicts of typed entries: `dict[str, Any]` fields with `metadata={"entries": T}` (and
    optionally `"named_in": <list field>`, where a command-line-only entry's name must appear)."""
    from dataclasses import fields

    return {f.name: dict(f.metadata) for f in fields(schema) if "entries" in f.metadata}


def _entry_fields(schema: type) -> dict[str, type]:
    return {name: meta["entries"] for name, meta in _entry_metadata(schema).items()}


def _schema_node(schema: type) -> DictConfig:
    """A stage schema as Hydra composes it, its dicts of typed entries open (struct off): OmegaConf cannot add
    a key to a typed dict from a dotted override (it assigns `{}` first, which a dataclass type refuses), so
    such a dict is untyped in the schema and Hydra must let `stage.per_phase.<new>.kind=...` add the entry and
    `stage.per_phase.phase2.lr=...` add a key to a YAML entry; `_type_entries` types every entry afterwards."""
    node = OmegaConf.structured(schema)
    for name in _entry_fields(schema):
        OmegaConf.set_struct(node[name], False)
    return node


def load_resolved(path: str | Path) -> DictConfig:
    """A resolved config written by the driver, typed again (root and stage schemas), so that a process
    without Hydra (a Slurm job, a local generate worker) sees exactly what the driver's stage saw."""
    raw = OmegaConf.load(path)
    schema = stage_module(raw.stage.name).Config
    stage = OmegaConf.merge(OmegaConf.structured(schema), raw.pop("stage"))
    _type_entries(stage, schema, stage.name)
    root = OmegaConf.merge(OmegaConf.structured(RootConfig), raw)
    root.stage = stage
    return root


def _stage_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Splits command-line overrides into (the rest, `stage.*` values); `stage=` is set by the caller.

    Only the `stage` key itself is split off: `stages.<name>.*` (experiment values given on the command
    line) stays in the rest, so a pipeline run can change one stage's values without `stage=<name>`.
    """

    def head(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0].split(".", 1)[0]

    stage_vals = [o for o in overrides if o.lstrip("+~").startswith("stage.")]
    rest = [o for o in overrides if head(o) != "stage"]
    return rest, stage_vals


def resolve_stage(cfg: DictConfig, name: str, overrides: list[str]) -> DictConfig:
    """The root config with `stage` set to `name`'s fully layered, typed config."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    rest, stage_vals = _stage_overrides(overrides)
    root = compose(config_name="config", overrides=rest + [f"stage={name}"])
    node = root.stage
    _open_free_form(node)
    exp_vals = root.stages.get(name) if root.stages else None
    if exp_vals:
        node = OmegaConf.merge(node, exp_vals)
    schema = stage_module(name).Config
    declared = {f: set(node.get(f) or ()) for f in _entry_fields(schema)}  # YAML + experiment entries
    if stage_vals:
        dotlist = [o.lstrip("+").removeprefix("stage.") for o in stage_vals]
        node = OmegaConf.merge(node, OmegaConf.from_dotlist(dotlist))
    _type_entries(node, schema, name)
    _no_stray_entries(node, schema, name, declared)
    with open_dict(root):
        root.stage = node
    OmegaConf.resolve(root)
    return root


def _no_stray_entries(node: DictConfig, schema: type, where: str, declared: dict[str, set]) -> None:
    """An entry that only the command line names, and that names nothing the stage uses (a phase not in
    `phases`), is a typo (`stage.per_phase.phse2.lr=...`): the typed dict refused it, so refuse it here too."""
    for name, meta in _entry_metadata(schema).items():
        used = set(node.get(meta.get("named_in")) or ()) if meta.get("named_in") else None
        stray = (
            sorted(set(node.get(name) or ()) - declared[name] - (used or set())) if used is not None else []
        )
        if stray:
            raise ValueError(
                f"{where}.{name}.{stray[0]}: set on the command line, but {stray[0]!r} is not in "
                f"{where}.{meta['named_in']}={sorted(used)}: a typo, or add it there"
            )


def _type_entries(node: DictConfig, schema: type, where: str) -> None:
    """Types each entry of the schema's dicts of typed entries (train's `per_phase`: PhaseOverride), which
    the schema leaves untyped for Hydra (`_schema_node`): an unknown key or a wrong type still fails before
    any stage runs, naming the entry, and every entry has all of the type's fields."""
    from omegaconf.errors import OmegaConfBaseException

    for name, entry_type in _entry_fields(schema).items():
        child = node.get(name)
        if not child:
            continue
        typed = {}
        for key in child:
            try:
                typed[key] = OmegaConf.merge(OmegaConf.structured(entry_type), child[key])
            except (OmegaConfBaseException, ValueError) as e:  # a scalar entry: OmegaConf's ValueError
                why, valid = str(e).splitlines()[0], ", ".join(entry_type.__dataclass_fields__)
                raise ValueError(f"{where}.{name}.{key}: {why} (valid keys: {valid})") from None
        node[name] = typed


def _open_free_form(node: DictConfig) -> None:
    """Lets free-form `dict[str, Any]` fields (e.g. `engine.extra_body`) take keys from the experiment and
    the command line: struct mode, inherited from the root, would refuse every key of a field whose schema
    says any key is fine. Typed sections and typed dicts stay closed, so typos still fail (a dict typed by
    its entries' metadata, `per_phase`, is open here and typed entry by entry in `_type_entries`)."""
    from dataclasses import is_dataclass
    from typing import Any

    for key in list(node.keys()):
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            meta = child._metadata
            # free-form: values of Any or a plain type (str names, int counts); a dict of typed sections stays
            # closed
            if meta.object_type is dict and (meta.element_type is Any or not is_dataclass(meta.element_type)):
                OmegaConf.set_struct(child, False)
            _open_free_form(child)


def stage_names(cfg: DictConfig) -> list[str]:
    names = [cfg.stage.name] if cfg.get("stage") else list(cfg.pipeline)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(
            f"unknown stage(s) {', '.join(map(repr, unknown))} in pipeline; valid stages: {', '.join(STAGES)}"
        )
    return names


def run_pipeline(
    cfg: DictConfig, overrides: list[str], base: Path | None = None
) -> dict[str, Manifest] | dict[str, list[str]]:
    """Runs the stages here (manifests by stage) or, with `cluster.kind=slurm`, submits them (job ids)."""
    names = stage_names(cfg)
    if not cfg.get("stage") and any(o.lstrip("+~").startswith("stage.") for o in overrides):
        raise ValueError(
            "`stage.*` overrides need one stage: add stage=<name> (or set experiment `stages.<name>`)"
        )
    paths = Paths.for_run(cfg.run.root, cfg.run.name, base)
    validate(cfg.cluster)
    resolved = {name: resolve_stage(cfg, name, overrides) for name in names}
    for stage_cfg in resolved.values():  # a bad value in the last stage fails before the first one runs
        check_stage(stage_cfg)
    if cfg.cluster.kind == "slurm":
        from distill.cluster.slurm import submit_pipeline

        return submit_pipeline(cfg, names, resolved.__getitem__, paths)
    done: dict[str, Manifest] = {}
    try:
        for name in names:
            t0 = time.perf_counter()
            with stage_log(paths.stage_dir(name), name):  # third-party lines -> <stage>/stage.log
                done[name] = run_locked(resolved[name], paths)
                stage_pictures(cfg, paths, name)
            log.info("%s finished in %.1fs -> %s", name, time.perf_counter() - t0, paths.stage_dir(name))
    except Exception:
        _report(cfg, paths, overrides)  # what finished before the failure
        raise
    report = _report(cfg, paths, overrides)
    print(f"[distill] run {cfg.run.name}: {', '.join(names)} done -> {paths.run_dir}; report {report}")
    return done


def stage_lock(cfg: DictConfig, paths: Paths) -> RunLock:
    """The lock a process running `cfg.stage` holds: the stage's, or a generate array task's shard lock
    (then the whole-stage holder, the merge, takes each shard's lock in turn: distill.generate.stage)."""
    g, stage_dir = cfg.stage, paths.stage_dir(cfg.stage.name)
    what = f"{g.name} of run {cfg.run.name}"
    if g.name == "generate" and g.get("shard") is not None:
        from distill.generate.stage import shard_name

        part = shard_name(g.shard, g.num_shards)
        return RunLock(lock_path(stage_dir, part), f"{what} ({part})")
    if g.name == "curate" and g.get("shard") is not None:  # a task's units are its own (distill.curate.parts)
        part = f"task-{g.shard:05d}-of-{g.num_shards:05d}"
        return RunLock(lock_path(stage_dir, part), f"{what} ({part})")
    return RunLock(lock_path(stage_dir), what)


def run_locked(cfg: DictConfig, paths: Paths) -> Manifest:
    """Runs one stage holding its run lock; first sweeps what killed atomic writes left in its directory
    (a generate shard's parts are swept by the shard's own lock holder)."""
    with stage_lock(cfg, paths):
        if cfg.stage.get("shard") is None:
            for f in sweep_temp_files(paths.stage_dir(cfg.stage.name), skip=("parts",)):
                log.info("removed %s (left by a killed write)", f)
        return stage_runner(cfg.stage.name)(cfg, paths)


def _report(cfg: DictConfig, paths: Paths, overrides: list[str]) -> Path | None:
    """The run report, also after a failed stage (what finished); its own failure never hides the stage's."""
    try:
        with stage_log(paths.run_dir, "report", "report.log"):
            return write_report(paths, cfg, overrides)
    except Exception as e:  # noqa: BLE001
        log.warning("run report not written: %s (see %s)", e, paths.run_dir / "report.log")
        return None
