"""The exported model's card: what it is, what it was distilled from and on, how it scores, where it routes."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from distill.core.manifest import Manifest
from distill.core.paths import Paths


def _eval_table(metrics: dict) -> list[str]:
    lines = [
        "| model | category | avg@k | pass@k | cons@k | mean tokens | truncated |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_cat in metrics["models"].items():
        for cat, s in by_cat.items():
            lines.append(
                f"| {name} | {cat} | {s['avg@k']:.3f} | {s['pass@k']:.3f} | {s['cons@k']:.3f} "
                f"| {s['mean_tokens']:.1f} | {s['truncation_rate']:.3f} |"
            )
    return lines


def _funnel(paths: Paths) -> list[str]:
    p = paths.stage_dir("curate") / "manifest.json"
    if not p.exists():
        return ["(no curate manifest)"]
    funnel = Manifest.read(p).metrics.get("funnel", {})
    return ["```", json.dumps(funnel, indent=2), "```"]


def _phases(paths: Paths) -> list[str]:
    out = []
    for d in sorted(paths.stage_dir("train").glob("*/manifest.json")):
        m = Manifest.read(d)
        hp = {k: m.config.get(k) for k in ("epochs", "lr", "max_length", "strategy") if k in m.config}
        out.append(f"- **{d.parent.name}**: key `{m.key}`, rows {m.metrics.get('rows', '?')}, {hp}")
    return out or ["(no phase manifests)"]


def model_card(
    cfg: DictConfig,
    paths: Paths,
    served: str,
    student: str,
    metrics: dict,
    entry: dict,
    lineage: dict,
    gen: dict,
) -> str:
    table = entry["routing"]["categories"]
    costs = entry["policy_costs"]
    lines = [
        f"# {served}",
        "",
        f"A reasoning student distilled by `distill` (run `{cfg.run.name}`): the commodity tier of a two-tier router.",
        "",
        f"- **Base model**: `{cfg.student.name}` (`{cfg.student.path}`)",
        f"- **Teacher**: `{cfg.teacher.name}` (`{cfg.teacher.path}`)",
        f"- **Exported checkpoint**: `{student}`",
        f"- **Generation defaults** (as evaluated): temperature {gen['temperature']}, top_p {gen['top_p']}, "
        f"max_new_tokens {gen['max_new_tokens']}, EOS ids {gen['eos_token_id']}",
        "",
        "## Data funnel",
        *_funnel(paths),
        "",
        "## Curriculum phases",
        *_phases(paths),
        "",
        f"## Evaluation (held-out, k={metrics['k']}, sampling {metrics['sampling']})",
        *_eval_table(metrics),
        "",
        "## Routing",
        f"Commodity tier where the student's {entry['routing']['metric']} is within {entry['routing']['margin']} of "
        f"`{entry['routing']['frontier_model']}`.",
        "",
        "| category | tier | student | frontier |",
        "|---|---|---|---|",
        *[f"| {c} | {r['tier']} | {r['student']:.3f} | {r['frontier']:.3f} |" for c, r in table.items()],
        "",
        "| policy | accuracy | cost / query ($) | cost / correct ($) |",
        "|---|---|---|---|",
        *[
            f"| {p} | {c['accuracy']:.3f} | {c['cost_per_query']:.3g} | "
            f"{'-' if c['cost_per_correct'] is None else format(c['cost_per_correct'], '.3g')} |"
            for p, c in costs.items()
        ],
        "",
        "## Lineage",
        "```json",
        json.dumps(lineage, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
