"""The two-tier routing table and the cost of each routing policy, from measured eval numbers.

A category goes to the commodity tier (the distilled student) only where the student is within `margin`
of the frontier model at a stated confidence: the upper end of a one-sided interval on the gap
(frontier - student), from the paired per-problem differences on the same eval problems, must be within
the margin. A gap of 0.059 against a margin of 0.05 with an SE of 0.05 is not a decision but noise, and the
table says so (`evidence: inconclusive`). Expected cost per correct answer of a policy is its expected cost
per query divided by its expected accuracy, both weighted by each category's share of traffic.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def per_query(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


def z_value(confidence: float) -> float:
    """One-sided normal quantile: the gap's upper bound is gap + z * SE at this confidence."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"export.route_confidence={confidence}: use a value in [0.5, 1)")
    return statistics.NormalDist().inv_cdf(confidence)


def per_problem(rows: Iterable[dict], category_field: str = "category") -> dict[str, dict]:
    """problem id -> the model's mean verdict, mean token counts, category, problem and prompt over its k samples."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["problem_id"]].append(r)
    out = {}
    for pid, rs in groups.items():
        out[pid] = {
            "avg": sum(1.0 for r in rs if r["verdict"]) / len(rs),
            "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in rs),
            "completion_tokens": statistics.fmean(r["completion_tokens"] for r in rs),
            "category": str((r0 := rs[0]).get("meta", {}).get(category_field, "all")),
            "problem": r0["problem"],
            "prompt": r0.get("prompt") or r0["problem"],  # the user message as the model received it
        }
    return out


def paired_gaps(student: dict[str, dict], frontier: dict[str, dict]) -> dict[str, dict]:
    """Per category: mean gap (frontier - student) over shared problems, its paired SE, and n."""
    shared = sorted(set(student) & set(frontier))
    if not shared:
        raise ValueError("export: the student and the frontier model were evaluated on no common problem")
    diffs: dict[str, list[float]] = defaultdict(list)
    for pid in shared:
        diffs[student[pid]["category"]].append(frontier[pid]["avg"] - student[pid]["avg"])
    out = {}
    for cat, d in sorted(diffs.items()):
        sd = statistics.stdev(d) if len(d) > 1 else math.inf
        out[cat] = {"gap": statistics.fmean(d), "se": sd / math.sqrt(len(d)), "n": len(d)}
    return out


def routing_table(
    student: dict[str, dict],
    frontier: dict[str, dict],
    margin: float,
    metric: str = "avg@k",
    se: dict[str, float] | None = None,
    z: float = 0.0,
) -> dict[str, dict]:
    """Per category: the tier, both accuracies, the gap and its one-sided upper bound. Commodity only where
    the upper bound is within the margin; `evidence` says whether the data decided it."""
    table = {}
    for cat in sorted(set(student) & set(frontier)):
        s, f = student[cat][metric], frontier[cat][metric]
        gap, err = f - s, (se or {}).get(cat, 0.0)
        upper, lower = gap + z * err, gap - z * err
        evidence = (
            "within margin" if upper <= margin else "beyond margin" if lower > margin else "inconclusive"
        )
        table[cat] = {
            "tier": "commodity" if upper <= margin else "frontier",
            "student": s,
            "frontier": f,
            "gap": gap,
            "gap_se": err,
            "gap_upper": upper,
            "evidence": evidence,
        }
    return table


def _policy(
    choice: dict[str, str],
    stats: dict[str, dict[str, dict]],
    prices: dict[str, Price],
    weights: dict[str, float],
    metric: str,
) -> dict:
    cost = acc = 0.0
    for cat, w in weights.items():
        tier = choice[cat]
        m = stats[tier][cat]
        cost += w * prices[tier].per_query(m["mean_prompt_tokens"], m["mean_tokens"])
        acc += w * m[metric]
    return {
        "cost_per_query": cost,
        "accuracy": acc,
        "cost_per_correct": cost / acc if acc > 0 else None,
        "commodity_share": sum(w for c, w in weights.items() if choice[c] == "commodity"),
    }


def traffic_weights(student: dict[str, dict], cats: list[str], given: dict | None) -> dict[str, float]:
    """Each category's share of traffic: as configured (normalised), else its share of the eval problems."""
    if given:
        missing = sorted(set(cats) - set(given))
        if missing:
            raise KeyError(f"export.traffic: no weight for categories {missing} (have: {sorted(given)})")
        total = sum(given[c] for c in cats)
        return {c: given[c] / total for c in cats}
    total = sum(student[c]["problems"] for c in cats)
    return {c: student[c]["problems"] / total for c in cats}


def policy_costs(
    student: dict[str, dict],
    frontier: dict[str, dict],
    table: dict[str, dict],
    prices: dict[str, Price],
    weights: dict[str, float] | None = None,
    metric: str = "avg@k",
) -> dict[str, dict]:
    """Expected cost per correct answer of all-frontier, all-commodity and routed traffic."""
    cats = list(table)
    weights = weights or traffic_weights(student, cats, None)
    stats = {"commodity": student, "frontier": frontier}
    return {
        "all_frontier": _policy({c: "frontier" for c in cats}, stats, prices, weights, metric),
        "all_commodity": _policy({c: "commodity" for c in cats}, stats, prices, weights, metric),
        "routed": _policy({c: table[c]["tier"] for c in cats}, stats, prices, weights, metric),
    }


def litellm_model_list(tiers: dict[str, dict]) -> dict:
    """A LiteLLM Router / proxy config: one model group per tier (the query router's answer is the group
    name), OpenAI-compatible endpoints, prices per token. Keys are `os.environ/NAME` references only."""
    model_list = []
    for tier, t in tiers.items():
        params = {
            "model": f"{t['provider']}/{t['model']}",
            "api_base": t["base_url"],
            "api_key": f"os.environ/{t['api_key_env']}" if t.get("api_key_env") else "EMPTY",
            "input_cost_per_token": t["prices"]["input_per_mtok"] / 1e6,
            "output_cost_per_token": t["prices"]["output_per_mtok"] / 1e6,
        }
        model_list.append(
            {"model_name": tier, "litellm_params": params, "model_info": {"id": f"{tier}-{t['model']}"}}
        )
    return {
        "model_list": model_list,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2},
    }
