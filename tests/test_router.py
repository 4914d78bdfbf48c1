"""Routing table and policy costs against hand-computed numbers."""

from __future__ import annotations

import pytest

from distill.export.router import Price, policy_costs, routing_table


def _m(acc, problems=10, p=100, c=400):
    return {"avg@k": acc, "problems": problems, "mean_prompt_tokens": p, "mean_tokens": c}


STUDENT = {"easy": _m(0.9), "hard": _m(0.3)}
FRONTIER = {"easy": _m(0.95, c=800), "hard": _m(0.8, c=800)}
PRICES = {"commodity": Price(0.1, 0.1), "frontier": Price(2.0, 8.0)}


def test_routing_table_margin():
    t = routing_table(STUDENT, FRONTIER, margin=0.1)
    assert t["easy"]["tier"] == "commodity" and t["hard"]["tier"] == "frontier"
    assert t["hard"]["gap"] == pytest.approx(0.5)
    assert routing_table(STUDENT, FRONTIER, margin=0.6)["hard"]["tier"] == "commodity"


def test_policy_costs_hand_computed():
    t = routing_table(STUDENT, FRONTIER, margin=0.1)
    p = policy_costs(STUDENT, FRONTIER, t, PRICES)
    frontier_q = (100 * 2.0 + 800 * 8.0) / 1e6  # 0.0066 per query
    commodity_q = (100 * 0.1 + 400 * 0.1) / 1e6  # 0.00005 per query
    assert p["all_frontier"]["cost_per_query"] == pytest.approx(frontier_q)
    assert p["all_frontier"]["cost_per_correct"] == pytest.approx(frontier_q / 0.875)
    assert p["all_commodity"]["cost_per_correct"] == pytest.approx(commodity_q / 0.6)
    routed_cost = 0.5 * commodity_q + 0.5 * frontier_q
    assert p["routed"]["accuracy"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.8)
    assert p["routed"]["cost_per_correct"] == pytest.approx(routed_cost / 0.85)
    assert p["routed"]["commodity_share"] == 0.5
