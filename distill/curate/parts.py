"""Curate's units of work and their merge: the sample pass, unit by unit, then one manifest over all.

Each unit (a generate shard) is curated on its own into one shard per phase plus one of rejected rows,
under `curate/parts/<key>/<output>/unit-NNNNN.parquet`, and its manifest (`unit-NNNNN.manifest.json`, with
the funnel counts of its rows) is written last: a killed pass resumes at the first unfinished unit, and a
unit is done by whichever process got it (this one, a local worker, a Slurm array task). The merge only
lists every unit's shards in unit order and sums their counts, so a sharded run has exactly the rows of
a single-process one, and each input row ends in exactly one phase shard or rejected shard.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distill.core.manifest import Manifest, finished
from distill.core.paths import Paths
from distill.core.schemas import REJECTED, TRAIN_PAIR, RowError
from distill.core.shards import ShardWriter, dataset_record
from distill.curate.inputs import Units
from distill.curate.sample_pass import PassContext, Tally, phase_names, process_chunk

STAGE = "curate"


def unit_name(u: int) -> str:
    return f"unit-{u:05d}"


def _writers(parts: Path, names: list[str], u: int) -> dict[str, ShardWriter]:
    out = {n: ShardWriter(parts / n / f"{unit_name(u)}.parquet", TRAIN_PAIR) for n in names}
    out["rejected"] = ShardWriter(parts / "rejected" / f"{unit_name(u)}.parquet", REJECTED)
    return out


def run_unit(
    units: Units, u: int, cfg: DictConfig, paths: Paths, ctx: PassContext, pp: dict, parts: Path, key: str,
    bar: Any = None,
) -> Manifest:  # fmt: skip
    """One unit's sample pass, chunk by chunk (`stage.chunk_samples` samples of whole problems at most)."""
    if m := finished(parts, key, f"{unit_name(u)}.manifest.json"):
        return m
    for f in parts.glob(f"*/.{unit_name(u)}.parquet.*.tmp"):  # a killed write of this unit's
        f.unlink(missing_ok=True)
    names, tally = phase_names(cfg.stage), Tally()
    writers = _writers(parts, names, u)
    try:
        buf: list[dict] = []
        for group in units.groups(u, pp["contiguous"][u]):
            buf += [row for row, _ in group]
            if len(buf) >= cfg.stage.chunk_samples:
                _chunk(buf, cfg, paths, ctx, pp["reasons"], writers, tally, bar)
                buf = []
        if buf:
            _chunk(buf, cfg, paths, ctx, pp["reasons"], writers, tally, bar)
        records = {n: w.close() for n, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    m = Manifest(
        stage=STAGE,
        key=key,
        config={"unit": u, "of": len(units)},
        outputs={
            n: {"path": str(parts / n / r["file"]), "rows": r["rows"], "sha256": r["sha256"]}
            for n, r in records.items()
        },  # fmt: skip
        metrics={"tally": tally.to_json()},
    )
    m.write(parts, f"{unit_name(u)}.manifest.json")
    return m


def _chunk(rows: list[dict], cfg, paths, ctx, reasons, writers, tally: Tally, bar) -> None:  # noqa: ANN001
    pairs, stats = process_chunk(rows, cfg, paths, ctx, reasons)
    for name, ps in pairs.items():
        writers[name].write(ps)
    writers["rejected"].write(
        {k: v for k, v in r.items() if k != "ref_unparsed"} for r in rows if r["reject_reason"]
    )
    tally.add_chunk(rows, pairs, stats)
    if bar is not None:
        bar.update(len(rows))
        bar.set_postfix(kept=tally.input - sum(tally.reasons.values()), rejected=sum(tally.reasons.values()))


def merge(n_units: int, cfg: DictConfig, parts: Path, key: str) -> tuple[dict[str, dict], Tally]:
    """Every unit's shards listed in unit order per output, and the units' counts summed."""
    ms = []
    for u in range(n_units):
        m = finished(parts, key, f"{unit_name(u)}.manifest.json")
        if m is None:
            raise RowError(f"{parts}: {unit_name(u)} is not finished (its array task failed?): rerun curate")
        ms.append(m)
    tally = Tally()
    for m in ms:
        tally += Tally(m.metrics["tally"])
    outputs = {}
    for name in [*phase_names(cfg.stage), "rejected"]:
        shards = [{"file": Path(m.outputs[name]["path"]).name, **{k: m.outputs[name][k] for k in ("rows", "sha256")}}
                  for m in ms]  # fmt: skip
        outputs[name] = dataset_record(parts / name, shards)
    return outputs, tally


def sweep_other_keys(out_dir: Path, key: str) -> None:
    """Parts of earlier configs are dead once a new key's merge is written: the disk holds one result."""
    for d in (out_dir / "parts").iterdir() if (out_dir / "parts").is_dir() else []:
        if d.is_dir() and d.name != key:
            shutil.rmtree(d, ignore_errors=True)
