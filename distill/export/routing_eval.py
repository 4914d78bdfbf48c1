"""Training the query router and measuring it on held-out problems, as RouteLLM reports a router.

Every eval problem is scored by a model trained without it (k-fold cross-fitting), and the routing curve
(accuracy against the share of traffic sent to the frontier) is read off those held-out scores for the
classifier, random routing, the per-category rule (categories in order of their gap, measured on the other
folds) and an oracle that knows each problem's outcome. APGR is the area under the curve of the
performance gap recovered, (acc - acc_student) / (acc_frontier - acc_student), over the frontier share
(random routing: 0.5); CPT(x) is the smallest frontier share whose PGR reaches x. The threshold is
calibrated on the same held-out scores, and the exported router averages the fold models' weights (a
linear model, so the scores it gives are on the fold models' scale).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from distill.export.query_router import QueryRouter, QueryRouterConfig, featurize, fit, fold_of, spec_of

GRID = [i / 10 for i in range(11)]


@dataclass
class Problems:
    """The held-out problems, aligned: text, category, student and frontier accuracy, cost per query."""

    ids: list[str]
    texts: list[str]
    cats: list[str]
    s: np.ndarray
    f: np.ndarray
    cs: np.ndarray
    cf: np.ndarray


def route_fraction(scores: np.ndarray, share: float) -> np.ndarray:
    """How much of each problem goes to the frontier when `share` of traffic does, lowest scores first;
    problems tied at the boundary share it equally (so equal scores is exactly random routing)."""
    n, k = len(scores), share * len(scores)
    r = np.zeros(n)
    before = 0
    for v in np.unique(scores):
        idx = np.flatnonzero(scores == v)
        r[idx] = np.clip((k - before) / len(idx), 0.0, 1.0)
        before += len(idx)
    return r


def outcome(r: np.ndarray, p: Problems) -> dict:
    acc = float(np.mean(r * p.f + (1 - r) * p.s))
    cost = float(np.mean(r * p.cf + (1 - r) * p.cs))
    return {"frontier_share": float(r.mean()), "accuracy": acc, "cost_per_query": cost,
            "cost_per_correct": cost / acc if acc > 0 else None}  # fmt: skip


def pgr_summary(scores: np.ndarray, p: Problems) -> dict:
    """APGR and CPT(50%), CPT(80%) over every frontier share k/n."""
    lo, hi = float(p.s.mean()), float(p.f.mean())
    shares = np.arange(len(scores) + 1) / len(scores)
    acc = np.array([outcome(route_fraction(scores, q), p)["accuracy"] for q in shares])
    if hi - lo <= 1e-9:
        return {"apgr": None, "cpt50": None, "cpt80": None, "gap": hi - lo}
    pgr = (acc - lo) / (hi - lo)
    apgr = float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(shares)))

    def cpt(x: float) -> float | None:
        hit = np.flatnonzero(pgr >= x - 1e-12)
        return float(shares[hit[0]]) if len(hit) else None

    return {"apgr": apgr, "cpt50": cpt(0.5), "cpt80": cpt(0.8), "gap": hi - lo}


def _fit_rows(texts: list[str], y: np.ndarray, w: np.ndarray, c: QueryRouterConfig, spec: dict):
    X = featurize(texts, spec["dims"], spec["word_ngrams"], spec["char_ngrams"])
    return fit(X, y, w, c.l2, c.steps, c.lr)


def cross_fit(p: Problems, aux: list[tuple[str, float]], c: QueryRouterConfig, aux_weight: float):
    """(held-out scores, held-out category-rule scores, mean of the fold models' weights)."""
    spec, n = spec_of(c), len(p.ids)
    folds = np.array([fold_of(i, c.folds, c.seed) for i in p.ids])
    if len(set(folds)) < 2:
        raise ValueError(f"export.query_router: {n} eval problems fill fewer than 2 of {c.folds} folds")
    scores, cat_scores = np.zeros(n), np.zeros(n)
    coefs, biases = [], []
    aux_t = [t for t, _ in aux] if aux_weight > 0 else []
    aux_y = np.array([y for _, y in aux]) if aux_t else np.zeros(0)
    for k in sorted(set(folds)):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        texts = [p.texts[i] for i in tr] + aux_t
        y = np.concatenate([p.s[tr], aux_y])
        w = np.concatenate([np.ones(len(tr)), np.full(len(aux_t), aux_weight)])
        coef, bias = _fit_rows(texts, y, w, c, spec)
        coefs.append(coef)
        biases.append(bias)
        X = featurize([p.texts[i] for i in te], spec["dims"], spec["word_ngrams"], spec["char_ngrams"])
        scores[te] = 1.0 / (1.0 + np.exp(-(X.dot(coef) + bias)))
        gaps: dict[str, list[float]] = defaultdict(list)
        for i in tr:
            gaps[p.cats[i]].append(p.f[i] - p.s[i])
        mean_gap = {cat: float(np.mean(g)) for cat, g in gaps.items()}
        cat_scores[te] = [-mean_gap.get(p.cats[i], 0.0) for i in te]
    return scores, cat_scores, (np.mean(coefs, axis=0), float(np.mean(biases)))


def calibrate(scores: np.ndarray, p: Problems, c: QueryRouterConfig) -> tuple[float, dict]:
    """(threshold, what it was calibrated for): frontier iff score < threshold."""
    order = np.sort(scores)
    n = len(order)

    def threshold(k: int) -> float:
        if k <= 0:
            return float(order[0])
        if k >= n:
            return float(np.nextafter(order[-1], np.inf))
        return float((order[k - 1] + order[k]) / 2)

    if c.target_accuracy is not None:
        accs = [outcome((scores < threshold(k)).astype(float), p)["accuracy"] for k in range(n + 1)]
        hit = [k for k, a in enumerate(accs) if a >= c.target_accuracy]
        k = hit[0] if hit else int(np.argmax(accs))
        return threshold(k), {"target_accuracy": c.target_accuracy, "reached": bool(hit)}
    q = c.target_frontier_share
    if q is None or not 0 <= q <= 1:
        raise ValueError(
            f"export.query_router: set target_frontier_share in [0, 1] or target_accuracy (got {q})"
        )
    return threshold(round(q * n)), {"target_frontier_share": q}


def _curve(named: dict[str, np.ndarray], p: Problems) -> list[dict]:
    return [
        {
            "frontier_share": q,
            **{name: outcome(route_fraction(s, q), p)["accuracy"] for name, s in named.items()},
        }
        for q in GRID
    ]


def build(p: Problems, aux: list[tuple[str, float]], c: QueryRouterConfig) -> tuple[QueryRouter, dict]:
    """The exported router and its held-out report (curve, APGR/CPT, cost per correct answer)."""
    scores, cat_scores, (coef, bias) = cross_fit(p, aux, c, c.aux_weight)
    named = {"random": np.zeros(len(p.ids)), "category_rule": cat_scores, "classifier": scores}
    if aux and c.aux_weight > 0:
        named["classifier_eval_labels_only"] = cross_fit(p, aux, c, 0.0)[0]
    named["oracle"] = p.s - p.f
    tau, target = calibrate(scores, p, c)
    r = (scores < tau).astype(float)
    at = outcome(r, p)
    q = at["frontier_share"]
    report = {
        "problems": len(p.ids),
        "aux_rows": len(aux) if c.aux_weight > 0 else 0,
        "folds": c.folds,
        "curve": _curve(named, p),
        "pgr": {name: pgr_summary(s, p) for name, s in named.items()},
        "threshold": tau,
        "target": target,
        "at_threshold": {
            "classifier": at,
            "random": outcome(route_fraction(named["random"], q), p),
            "category_rule": outcome(route_fraction(cat_scores, q), p),
            "all_commodity": outcome(np.zeros(len(p.ids)), p),
            "all_frontier": outcome(np.ones(len(p.ids)), p),
        },
    }
    meta = {"labels": "eval per-problem student accuracy (+ curate teacher pass rates, weight "
            f"{c.aux_weight})", "target": target, "held_out": {k: report[k] for k in ("problems", "folds")}}  # fmt: skip
    return QueryRouter(coef, bias, spec_of(c), tau, meta), report


def curve_table(report: dict) -> list[str]:
    """The routing curve as a markdown table (accuracy per frontier share, one column per policy)."""
    names = [k for k in report["curve"][0] if k != "frontier_share"]
    lines = ["| frontier share | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in report["curve"]:
        lines.append(f"| {row['frontier_share']:.1f} | " + " | ".join(f"{row[n]:.3f}" for n in names) + " |")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines.append("| APGR | " + " | ".join(fmt(report["pgr"][n]["apgr"]) for n in names) + " |")
    lines.append("| CPT(50%) | " + " | ".join(fmt(report["pgr"][n]["cpt50"]) for n in names) + " |")
    lines.append("| CPT(80%) | " + " | ".join(fmt(report["pgr"][n]["cpt80"]) for n in names) + " |")
    return lines


def cost_table(report: dict) -> list[str]:
    lines = [
        "| policy | frontier share | accuracy | cost / query ($) | cost / correct ($) |",
        "|---|---|---|---|---|",
    ]
    for name, o in report["at_threshold"].items():
        cpc = "-" if o["cost_per_correct"] is None else f"{o['cost_per_correct']:.3g}"
        lines.append(
            f"| {name} | {o['frontier_share']:.3f} | {o['accuracy']:.3f} | {o['cost_per_query']:.3g} | {cpc} |"
        )
    return lines
