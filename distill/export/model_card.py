"""The exported model's card: what it is, what it was distilled from and on, how it scores, how to serve it
and where it routes. Every number is read from a manifest or a file the manifests name (the card test
parses it back against them), so the card cannot drift from the run.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from distill.core.manifest import MANIFEST, Manifest
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


def _curate(paths: Paths) -> Manifest | None:
    p = paths.stage_dir("curate") / MANIFEST
    return Manifest.read(p) if p.exists() else None


def _funnel(cur: Manifest | None) -> list[str]:
    """Samples in, each filter step's removals, samples kept; then problems and verdicts."""
    if cur is None:
        return ["(no curate manifest)"]
    f = cur.metrics
    lines = ["| step | removed | remaining |", "|---|---|---|", f"| input | 0 | {f['input']} |"]
    lines += [f"| {s['step']} | {s['removed']} | {s['remaining']} |" for s in f["steps"]]
    lines += ["", f"Kept {f['kept']} of {f['input']} samples ({f['rejected']} rejected); problems kept "
              f"{f['problems']['kept']} of {f['problems']['input']}; verdicts {json.dumps(f['verdicts'])}."]  # fmt: skip
    return lines


def _phases(paths: Paths, cur: Manifest | None) -> list[str]:
    """One row per phase (rows trained on, steps, loss, key), then the hyper-parameters side by side."""
    ms = [Manifest.read(d) for d in sorted(paths.stage_dir("train").glob(f"*/{MANIFEST}"))]
    if not ms:
        return ["(no phase manifests)"]
    rows = {n: o.get("rows") for n, o in (cur.outputs if cur else {}).items()}
    lines = [
        "| phase | rows | strategy | world size | steps | final loss | key |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in ms:
        ph = m.config["phase"]
        if m.config.get("kind") == "on_policy":  # trained on the student's samples of the source's problems
            rows[ph] = f"{m.metrics.get('prompts')} prompts (on-policy)"
        lines.append(
            f"| {ph} | {rows.get(ph, '-')} | {m.config.get('strategy')} | {m.metrics.get('world_size')} "
            f"| {m.metrics.get('global_step')} | {m.metrics.get('final_loss', float('nan')):.4f} | `{m.key}` |"
        )
    names = [m.config["phase"] for m in ms]
    keys = list(dict.fromkeys(k for m in ms for k in m.config.get("hparams", {})))
    lines += ["", "| hyper-parameter | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(json.dumps(m.config["hparams"].get(k)) for m in ms) + " |")
    return lines


def _routing(doc: dict) -> list[str]:
    r = doc["routing"]
    lines = [
        f"Commodity tier where the student's {r['metric']} is within {r['margin']} of `{doc['tiers']['frontier']['model']}` "
        f"(eval name `{doc['tiers']['frontier']['eval_name']}`) at {r['confidence']:.0%} one-sided confidence "
        f"(z = {r['z']:.3f}); traffic mix: {doc['traffic']['source']}.",
        "",
        "| category | tier | student | frontier | gap | gap SE | gap upper | evidence | traffic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    w = doc["traffic"]["weights"]
    for c, t in r["categories"].items():
        lines.append(f"| {c} | {t['tier']} | {t['student']:.3f} | {t['frontier']:.3f} | {t['gap']:.3f} "
                     f"| {t['gap_se']:.3f} | {t['gap_upper']:.3f} | {t['evidence']} | {w[c]:.3f} |")  # fmt: skip
    lines += ["", "| policy | accuracy | cost / query ($) | cost / correct ($) |", "|---|---|---|---|"]
    for p, c in doc["policy_costs"].items():
        cpc = "-" if c["cost_per_correct"] is None else format(c["cost_per_correct"], ".3g")
        lines.append(f"| {p} | {c['accuracy']:.3f} | {c['cost_per_query']:.3g} | {cpc} |")
    return lines


def _query_router(report: dict | None) -> list[str]:
    from distill.export.routing_eval import cost_table, curve_table

    if report is None:
        return ["(disabled: export.query_router.enabled=false)"]
    return [
        f"`query_router.json` (numpy-only hashed n-gram logistic regression, no pickle) reads each request's "
        f"last user message and sends it to the frontier when P(student solves) < {report['threshold']:.4f} "
        f"(calibrated for {json.dumps(report['target'])}). Held out: {report['problems']} eval problems, "
        f"{report['folds']}-fold cross-fitted; {report['aux_rows']} curate pass-rate rows in training. "
        "`litellm.yaml` is the LiteLLM Router config of both tiers; the router's answer is the model group.",
        "",
        "Routing curve (accuracy at each share of traffic sent to the frontier):",
        "",
        *curve_table(report),
        "",
        "At the calibrated threshold (held out):",
        "",
        *cost_table(report),
    ]


def model_card(
    cfg: DictConfig,
    paths: Paths,
    served: str,
    student: str,
    metrics: dict,
    doc: dict,
    lineage: dict,
    gen: dict,
    spec: dict,
    report: dict | None,
    weights: dict[str, str],
) -> str:
    cur = _curate(paths)
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
        "## Serving",
        f"From the export directory (the bundle is movable; device: {spec['device']}; binds {spec['host']}:{spec['port']}):",
        "",
        "```bash",
        spec["usage"],
        "```",
        "",
        "## Data funnel",
        *_funnel(cur),
        "",
        "## Curriculum phases",
        *_phases(paths, cur),
        "",
        f"## Evaluation (held-out, k={metrics['k']}, sampling {json.dumps(metrics['sampling'])})",
        *_eval_table(metrics),
        "",
        "## Routing by category",
        *_routing(doc),
        "",
        "## Query router",
        *_query_router(report),
        "",
        "## Lineage",
        "```json",
        json.dumps({"stages": lineage, "weights_sha256": weights}, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
