"""The run's pictures, drawn from what the stages wrote (manifests and the files they name), headless.

train: loss and learning rate per phase, and all phases on one step axis (each phase's `train_log.json`);
eval: avg@k with standard-error bars per model and category, and the completion-length distribution per
model (the shards of `eval/<model>`'s samples output). Pictures are derived files, not stage outputs: they live in
`<stage>/plots/`, are drawn again when missing or older than the stage's manifest (a stage that was up to
date costs nothing), and each drawn picture is logged to W&B when tracking is on. Core reads manifests
only, so the pictures never depend on a stage's code.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.core.manifest import MANIFEST, Manifest
from distill.core.paths import Paths
from distill.core.shards import iter_dataset

log = logging.getLogger(__name__)
PLOTS = "plots"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Atomic: a killed run never leaves half a PNG for the report to embed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def train_histories(run_dir: Path) -> dict[str, list[dict]]:
    """Phase -> the Trainer's log_history, in curriculum order (from the train manifest's inputs)."""
    m = Manifest.read(run_dir / "train" / MANIFEST)
    out = {}
    for i in m.inputs:
        phase = Manifest.read(Path(i["path"]) / MANIFEST)
        out[i["name"]] = json.loads(Path(phase.outputs["log"]["path"]).read_text()).get("log_history", [])
    return out


def _curve(hist: list[dict], key: str, offset: int = 0) -> tuple[list[int], list[float]]:
    pts = [(r["step"] + offset, float(r[key])) for r in hist if key in r and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _loss_lr(ax: Any, hist: list[dict], offset: int = 0, label: str = "", color: str | None = None) -> Any:
    xs, ys = _curve(hist, "loss", offset)
    ax.plot(xs, ys, color=color, label=f"{label} loss".strip())
    return _curve(hist, "learning_rate", offset)


def plot_train(run_dir: Path) -> list[Path]:
    """One loss/lr PNG per phase and one with every phase on a single step axis."""
    plt = _pyplot()
    hists = train_histories(run_dir)
    out_dir = run_dir / "train" / PLOTS
    paths = []
    for phase, hist in hists.items():
        fig, ax = plt.subplots(figsize=(7, 3.6))
        lx, ly = _loss_lr(ax, hist, color="#4c72b0")
        ax2 = ax.twinx()
        ax2.plot(lx, ly, color="#dd8452", linestyle="--", label="learning rate")
        ax.set(xlabel="step", ylabel="loss", title=f"train {phase}: loss and learning rate")
        ax2.set_ylabel("learning rate")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=8)
        paths.append(_save(fig, out_dir / f"loss_{phase}.png"))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax2, offset = ax.twinx(), 0
    for i, (phase, hist) in enumerate(hists.items()):
        lx, ly = _loss_lr(ax, hist, offset, phase, f"C{i}")
        ax2.plot(lx, ly, color=f"C{i}", linestyle="--", alpha=0.6)
        offset += max((int(r.get("step", 0)) for r in hist), default=0)
        ax.axvline(offset, color="grey", linewidth=0.6)
    ax.set(xlabel="step (phases one after another)", ylabel="loss", title="train: every phase")
    ax2.set_ylabel("learning rate (dashed)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "loss_all_phases.png"))
    return paths


PLOT_COLUMNS = ["problem_id", "verdict", "meta", "completion_tokens"]  # the pictures need no text


def eval_samples(run_dir: Path) -> tuple[dict[str, list[dict]], str]:
    """Model -> its scored samples (eval manifest's inputs, in order), and the category field."""
    m = Manifest.read(run_dir / "eval" / MANIFEST)
    out = {}
    for i in m.inputs:
        if i["path"].endswith(MANIFEST):
            mm = Manifest.read(i["path"])
            out[i["name"]] = list(iter_dataset(mm.outputs["samples"], columns=PLOT_COLUMNS))
    return out, str(m.config.get("category_field", "category"))


def avg_at_k_by_category(rows: list[dict], field: str) -> dict[str, tuple[float, float, int]]:
    """Category ("all" first) -> (avg@k, its standard error over problems, problems), as eval scores it:
    a sample is correct when its verdict is True (None, unparseable, is a miss)."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    groups: dict[str, list[float]] = defaultdict(list)
    for rs in by_problem.values():
        avg = sum(1 for r in rs if r["verdict"] is True) / len(rs)
        groups["all"].append(avg)
        groups[str((rs[0].get("meta") or {}).get(field, "all"))].append(avg)
    out = {}
    for cat in ["all", *sorted(c for c in groups if c != "all")]:
        v = groups[cat]
        se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0
        out[cat] = (statistics.fmean(v), se, len(v))
    return out


def plot_eval(run_dir: Path) -> list[Path]:
    """avg@k per model and category with standard-error bars, and completion lengths per model."""
    plt = _pyplot()
    samples, field = eval_samples(run_dir)
    scores = {name: avg_at_k_by_category(rows, field) for name, rows in samples.items()}
    cats = list(next(iter(scores.values()))) if scores else []
    width = 0.8 / max(len(scores), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cats) * max(len(scores), 1) * 0.5 + 3), 3.8))
    for i, (name, by_cat) in enumerate(scores.items()):
        xs = [c + (i - (len(scores) - 1) / 2) * width for c in range(len(cats))]
        vals = [by_cat.get(c, (0.0, 0.0, 0)) for c in cats]
        ax.bar(xs, [v[0] for v in vals], width, yerr=[v[1] for v in vals], capsize=3, label=name)
    ax.set_xticks(range(len(cats)), cats, rotation=20, ha="right")
    ax.set(ylabel="avg@k (± s.e. over problems)", ylim=(0, 1.05), title="eval: avg@k by category")
    ax.legend(fontsize=8, ncol=min(len(scores), 4))
    out_dir = run_dir / "eval" / PLOTS
    paths = [_save(fig, out_dir / "avg_at_k.png")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    lengths = {n: [r["completion_tokens"] for r in rows] for n, rows in samples.items()}
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = list(range(0, top + max(top // 40, 1) + 1, max(top // 40, 1)))
    for name, v in lengths.items():
        ax.hist(
            v, bins=bins, histtype="step", linewidth=1.4, label=f"{name} (median {statistics.median(v):.0f})"
        )
    ax.set(xlabel="completion tokens", ylabel="samples", title="eval: completion length per model")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "completion_lengths.png"))
    return paths


def plot_export(run_dir: Path) -> list[Path]:
    """The routing curve export measured (distill.export.routing_eval): accuracy against the share of
    queries sent to the frontier, for random routing, the per-category rule and the query classifier."""
    m = Manifest.read(run_dir / "export" / MANIFEST)
    if "routing" not in m.outputs:
        return []  # no query router (too few eval problems): nothing to draw
    curve = json.loads(Path(m.outputs["routing"]["path"]).read_text())["curve"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    share = [c["frontier_share"] for c in curve]
    for name, style in (("random", ":"), ("category_rule", "--"), ("classifier", "-"), ("oracle", "-.")):
        if name in curve[0]:
            ax.plot(share, [c[name] for c in curve], style, marker="o", ms=3, label=name.replace("_", " "))
    ax.set_xlabel("share of queries routed to the frontier")
    ax.set_ylabel("accuracy (held-out, out-of-fold)")
    ax.set_title("routing curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return [_save(fig, run_dir / "export" / PLOTS / "routing_curve.png")]


DRAW: dict[str, Callable[[Path], list[Path]]] = {
    "train": plot_train,
    "eval": plot_eval,
    "export": plot_export,
}
EXPECTED = {
    "train": ["loss_all_phases.png"],
    "eval": ["avg_at_k.png", "completion_lengths.png"],
    "export": ["routing_curve.png"],
}


def stage_pictures(cfg: Any, paths: Paths, stage: str, log_wandb: bool = True) -> list[Path]:
    """A finished stage's pictures, drawn again only when missing or older than its manifest."""
    manifest = paths.stage_dir(stage) / MANIFEST
    if stage not in DRAW or not manifest.exists():
        return []
    out_dir = paths.stage_dir(stage) / PLOTS
    have = sorted(out_dir.glob("*.png"))
    fresh = all((out_dir / n).exists() for n in EXPECTED[stage]) and all(
        p.stat().st_mtime >= manifest.stat().st_mtime for p in have
    )
    if fresh:
        return have
    for old in have:
        old.unlink()
    try:
        drawn = DRAW[stage](paths.run_dir)
    except (OSError, KeyError, ValueError) as e:  # a picture is not worth failing a finished stage for
        log.warning("%s: pictures not drawn (%s: %s); its outputs are complete", stage, type(e).__name__, e)
        return []
    if log_wandb and cfg is not None:
        _log_wandb(cfg, paths, stage, drawn)
    return drawn


def _log_wandb(cfg: Any, paths: Paths, stage: str, pictures: list[Path]) -> None:
    from distill.core.tracking import wandb_run

    with wandb_run(cfg, paths, job=f"{stage}-plots") as run:
        if run is None:
            return
        import wandb

        run.log({f"{stage}/{p.stem}": wandb.Image(str(p)) for p in pictures})
