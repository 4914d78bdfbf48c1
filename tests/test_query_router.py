"""The query-level router: features, training, JSON round trip, routing curve metrics and calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distill.export.query_router import QueryRouter, QueryRouterConfig, featurize, fit
from distill.export.routing_eval import Problems, build, calibrate, outcome, pgr_summary, route_fraction


def _problems(n: int = 120, seed: int = 0) -> Problems:
    """Synthetic traffic: the student fails on 'matrix' questions (half of the hard category) only; the
    category label alone cannot tell which hard ones, the text can."""
    rng = np.random.default_rng(seed)
    texts, cats, s, f = [], [], [], []
    for i in range(n):
        hard = i % 2 == 1
        matrix = hard and rng.random() < 0.5
        topic = "matrix determinant" if matrix else rng.choice(["sum of", "product of", "difference of"])
        texts.append(f"Compute the {topic} {rng.integers(1, 99)} and {rng.integers(1, 99)} item {i}")
        cats.append("hard" if hard else "easy")
        s.append(0.0 if matrix else 0.9)
        f.append(0.9)
    ids = [f"q{i:03d}" for i in range(n)]
    return Problems(ids, texts, cats, np.array(s), np.array(f), np.full(n, 1e-5), np.full(n, 1e-3))


def test_route_fraction_lowest_first_and_ties_share_the_boundary():
    r = route_fraction(np.array([0.9, 0.1, 0.5, 0.3]), 0.5)
    assert r.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert route_fraction(np.zeros(4), 0.3).tolist() == pytest.approx([0.3] * 4)  # equal scores = random
    r = route_fraction(np.array([0.0, 0.5, 0.5, 1.0]), 0.5)
    assert r.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])


def test_apgr_of_random_is_half_and_the_oracle_recovers_the_gap():
    p = _problems()
    assert pgr_summary(np.zeros(len(p.ids)), p)["apgr"] == pytest.approx(0.5, abs=1e-9)
    oracle = pgr_summary(p.s - p.f, p)
    assert oracle["apgr"] > 0.85 and oracle["cpt80"] <= 0.3


def test_features_do_not_depend_on_the_process_hash_seed():
    code = "from distill.export.query_router import featurize; print(featurize(['Compute 3 + 4'], 64, 2, [2, 3]).dense().tolist())"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(outs) == 1
    assert np.allclose(json.loads(outs.pop()), featurize(["Compute 3 + 4"], 64, 2, [2, 3]).dense())


def test_fit_learns_a_text_signal():
    p = _problems()
    X = featurize(p.texts, 1024, 2, [2, 4])
    coef, bias = fit(X, (p.s > 0).astype(float), np.ones(len(p.s)), 1e-3, 300, 0.1)
    prob = 1 / (1 + np.exp(-(X.dense() @ coef + bias)))  # the sparse products agree with dense ones
    assert prob[p.s == 0].max() < prob[p.s > 0].min()


def test_classifier_beats_random_and_the_category_rule_held_out(tmp_path):
    p = _problems()
    c = QueryRouterConfig(dims=1024, folds=4, target_frontier_share=0.25)
    router, report = build(p, [], c)
    pgr = report["pgr"]
    assert pgr["classifier"]["apgr"] > pgr["category_rule"]["apgr"] > pgr["random"]["apgr"] - 1e-9
    at = report["at_threshold"]
    assert at["classifier"]["frontier_share"] == pytest.approx(0.25, abs=1 / len(p.ids))
    assert at["classifier"]["accuracy"] > at["category_rule"]["accuracy"] > at["random"]["accuracy"]
    assert at["classifier"]["cost_per_correct"] < at["all_frontier"]["cost_per_correct"]
    # round trip: JSON only, same scores, and the route names a tier
    path = tmp_path / "qr.json"
    path.write_text(json.dumps(router.to_json()))
    again = QueryRouter.load(path)
    assert again.scores(p.texts[:5]) == pytest.approx(router.scores(p.texts[:5]))
    assert again.route("Compute the matrix determinant 3 and 4 item 7") == "frontier"
    assert (
        again.route_messages([{"role": "user", "content": "Compute the sum of 3 and 4 item 8"}])
        == "commodity"
    )


def test_calibration_for_a_target_accuracy_takes_the_smallest_share():
    p = _problems()
    scores = p.s + np.linspace(0, 0.01, len(p.s))  # a perfect ranking
    tau, target = calibrate(scores, p, QueryRouterConfig(target_accuracy=0.8))
    routed = outcome((scores < tau).astype(float), p)
    assert target["reached"] and routed["accuracy"] >= 0.8
    one_less = np.sort(scores)[int((scores < tau).sum()) - 1]
    assert outcome((scores < one_less).astype(float), p)["accuracy"] < 0.8
    tau, target = calibrate(scores, p, QueryRouterConfig(target_accuracy=0.99))
    assert not target["reached"]


def test_bad_router_files_and_config_name_the_problem(tmp_path):
    bad = tmp_path / "qr.json"
    bad.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ValueError, match=r"qr\.json.*format"):
        QueryRouter.load(bad)
    with pytest.raises(ValueError, match="dims"):
        build(_problems(), [], QueryRouterConfig(dims=1000))
    with pytest.raises(ValueError, match="no user message"):
        QueryRouter(
            np.zeros(8), 0.0, {"dims": 8, "word_ngrams": 1, "char_ngrams": [2, 2]}, 0.5
        ).route_messages([])
