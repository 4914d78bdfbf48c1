"""Routing table, its uncertainty, policy costs and the LiteLLM config, against hand-computed numbers."""

from __future__ import annotations

import statistics

import pytest

from distill.export.router import (
    Price,
    litellm_model_list,
    paired_gaps,
    policy_costs,
    routing_table,
    traffic_weights,
    z_value,
)


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


def test_a_gap_inside_the_noise_is_not_a_decision():
    """The issue's case: gap 0.059 vs margin 0.05 with SE 0.05 is inconclusive (frontier, by default);
    a small gap with a wide SE no longer goes to the commodity tier on its point estimate."""
    z = z_value(0.9)
    assert z == pytest.approx(1.2816, abs=1e-4)
    s = {"a": _m(0.5), "b": _m(0.5), "c": _m(0.5)}
    f = {"a": _m(0.559), "b": _m(0.52), "c": _m(0.9)}
    t = routing_table(s, f, margin=0.05, se={"a": 0.05, "b": 0.05, "c": 0.05}, z=z)
    assert t["a"]["tier"] == "frontier" and t["a"]["evidence"] == "inconclusive"
    assert t["b"]["tier"] == "frontier" and t["b"]["evidence"] == "inconclusive"
    assert routing_table(s, f, margin=0.05)["b"]["tier"] == "commodity"  # the point estimate alone
    assert t["c"]["evidence"] == "beyond margin"
    assert t["b"]["gap_upper"] == pytest.approx(0.02 + z * 0.05)
    t = routing_table(s, f, margin=0.05, se={"b": 0.01}, z=z)
    assert t["b"]["tier"] == "commodity" and t["b"]["evidence"] == "within margin"
    with pytest.raises(ValueError, match="route_confidence"):
        z_value(1.0)


def test_paired_gaps_hand_computed():
    def pp(avgs, cat="x"):
        return {f"p{i}": {"avg": a, "category": cat} for i, a in enumerate(avgs)}

    g = paired_gaps(pp([0.0, 0.5, 1.0, 0.25]), pp([0.5, 0.5, 1.0, 1.0]))["x"]
    d = [0.5, 0.0, 0.0, 0.75]
    assert g["gap"] == pytest.approx(sum(d) / 4) and g["n"] == 4
    assert g["se"] == pytest.approx(statistics.stdev(d) / 2)
    with pytest.raises(ValueError, match="no common problem"):
        paired_gaps(pp([1.0]), {"other": {"avg": 1.0, "category": "x"}})


def test_traffic_weights_and_litellm_config():
    assert traffic_weights(STUDENT, ["easy", "hard"], {"easy": 3, "hard": 1}) == {"easy": 0.75, "hard": 0.25}
    with pytest.raises(KeyError, match="export.traffic"):
        traffic_weights(STUDENT, ["easy", "hard"], {"easy": 1})
    tiers = {
        "commodity": {"model": "s", "base_url": "http://h:1/v1", "provider": "openai", "api_key_env": None,
                      "prices": {"input_per_mtok": 0.07, "output_per_mtok": 0.15}},
        "frontier": {"model": "big", "base_url": "https://api/v1", "provider": "openai", "api_key_env": "KEY",
                     "prices": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
    }  # fmt: skip
    cfg = litellm_model_list(tiers)
    by = {m["model_name"]: m["litellm_params"] for m in cfg["model_list"]}
    assert by["frontier"]["api_key"] == "os.environ/KEY" and by["frontier"]["model"] == "openai/big"
    assert by["frontier"]["output_cost_per_token"] == pytest.approx(15e-6)
    assert by["commodity"]["api_base"] == "http://h:1/v1" and by["commodity"][
        "input_cost_per_token"
    ] == pytest.approx(7e-8)
