"""The two-tier routing table and the cost of each routing policy, from measured eval numbers.

A category goes to the commodity tier (the distilled student) when the student's accuracy there is within
`margin` of the frontier model's, else to the frontier tier. Expected cost per correct answer of a policy
is its expected cost per query divided by its expected accuracy, both weighted by each category's share
of traffic (by default its share of the eval problems).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def per_query(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


def routing_table(
    student: dict[str, dict], frontier: dict[str, dict], margin: float, metric: str = "avg@k"
) -> dict[str, dict]:
    """Per category: the tier, both accuracies and the gap (frontier - student)."""
    table = {}
    for cat in sorted(set(student) & set(frontier)):
        s, f = student[cat][metric], frontier[cat][metric]
        table[cat] = {
            "tier": "commodity" if s >= f - margin else "frontier",
            "student": s,
            "frontier": f,
            "gap": f - s,
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
    if weights is None:
        total = sum(student[c]["problems"] for c in cats)
        weights = {c: student[c]["problems"] / total for c in cats}
    stats = {"commodity": student, "frontier": frontier}
    return {
        "all_frontier": _policy({c: "frontier" for c in cats}, stats, prices, weights, metric),
        "all_commodity": _policy({c: "commodity" for c in cats}, stats, prices, weights, metric),
        "routed": _policy({c: table[c]["tier"] for c in cats}, stats, prices, weights, metric),
    }
