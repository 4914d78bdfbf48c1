"""router.yaml and the query router's inputs, from what eval and curate measured.

router.yaml is self-contained: both tiers as endpoints with served model names, prices with units, token
counts per tier and category, the traffic mix it assumes, the per-category decisions with their
uncertainty, and the query router (file, threshold, held-out numbers) with the LiteLLM config beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from distill.core.manifest import MANIFEST, Manifest
from distill.core.paths import Paths
from distill.core.shards import iter_dataset
from distill.export.router import (
    Price,
    paired_gaps,
    per_problem,
    policy_costs,
    routing_table,
    traffic_weights,
    z_value,
)
from distill.export.routing_eval import Problems

FORMAT = "distill.router/v1"
UNITS = {
    "prices": "USD per 1M tokens (input = prompt, output = completion)",
    "tokens": "mean tokens per query, measured by eval on the held-out problems",
    "cost": "USD per query; cost per correct = cost per query / accuracy",
}


def eval_problems(paths: Paths, name: str, category_field: str) -> dict[str, dict]:
    """One eval model's per-problem results (the shards of eval/<name>'s samples output)."""
    mpath = paths.stage_dir("eval") / name / MANIFEST
    if not mpath.exists():
        raise FileNotFoundError(f"{mpath}: export needs eval's per-problem results for {name!r}; rerun eval")
    return per_problem(iter_dataset(Manifest.read(mpath).outputs["samples"]), category_field)


def curate_pass_rates(paths: Paths) -> list[tuple[str, float]]:
    """(user message, teacher pass rate) for every curated training problem with a verdict."""
    cpath = paths.stage_dir("curate") / MANIFEST
    if not cpath.exists():
        return []
    m = Manifest.read(cpath)
    rates: dict[str, float] = {}
    for name, out in m.outputs.items():
        if name != "rejected" and (out.get("format") or Path(out["path"]).suffix == ".jsonl"):
            for r in iter_dataset(out, columns=["problem_id", "pass_rate"]):
                if r.get("pass_rate") is not None:
                    rates.setdefault(r["problem_id"], float(r["pass_rate"]))
    texts: dict[str, str] = {}
    for inp in m.inputs:
        if inp.get("name") == "samples" and Path(inp["path"]).exists():
            for r in iter_dataset(inp, columns=["problem_id", "prompt", "problem"]):
                texts.setdefault(r["problem_id"], r.get("prompt") or r["problem"])
    return [(texts[p], rate) for p, rate in sorted(rates.items()) if p in texts]


def tier(x: DictConfig, name: str) -> dict:
    """A tier's endpoint, served model name, provider, key variable and prices, as config gives them."""
    if name == "commodity":
        return {"model": None, "base_url": x.endpoint, "provider": "openai", "api_key_env": x.commodity_api_key_env,
                "prices": OmegaConf.to_container(x.commodity_price)}  # fmt: skip
    f = x.frontier
    if not f.model or not f.base_url:
        raise ValueError(
            "export.frontier: set model and base_url (the frontier tier's endpoint and served name)"
        )
    return {"model": f.model, "base_url": f.base_url, "provider": f.provider, "api_key_env": f.api_key_env,
            "prices": OmegaConf.to_container(f.prices)}  # fmt: skip


def problems_for_router(s: dict[str, dict], f: dict[str, dict], prices: dict[str, Price]) -> Problems:
    ids = sorted(set(s) & set(f))

    def cost(pp: dict[str, dict], price: Price) -> np.ndarray:
        return np.array([price.per_query(pp[i]["prompt_tokens"], pp[i]["completion_tokens"]) for i in ids])

    return Problems(
        ids=ids,
        texts=[s[i]["prompt"] for i in ids],  # what the router reads at serve time: the user message
        cats=[s[i]["category"] for i in ids],
        s=np.array([s[i]["avg"] for i in ids]),
        f=np.array([f[i]["avg"] for i in ids]),
        cs=cost(s, prices["commodity"]),
        cf=cost(f, prices["frontier"]),
    )


def _tokens(by_cat: dict[str, dict]) -> dict[str, dict]:
    return {c: {"prompt": v["mean_prompt_tokens"], "completion": v["mean_tokens"]} for c, v in by_cat.items()}


def router_document(
    x: DictConfig, served: str, metrics: dict, student: str, pp: dict[str, dict], query: dict | None
) -> dict:
    """router.yaml: tiers, units, traffic, per-category decisions with uncertainty, policy costs."""
    fname = x.frontier.eval_name
    if fname not in metrics["models"]:
        raise KeyError(
            f"export.frontier.eval_name={fname!r} is not an eval model (have: {', '.join(metrics['models'])})"
        )
    s_cat = {c: v for c, v in metrics["models"][student].items() if c != "all"}
    f_cat = {c: v for c, v in metrics["models"][fname].items() if c != "all"}
    tiers = {"commodity": {**tier(x, "commodity"), "model": served}, "frontier": tier(x, "frontier")}
    prices = {t: Price(**tiers[t]["prices"]) for t in tiers}
    gaps = paired_gaps(pp["commodity"], pp["frontier"])
    z = z_value(x.route_confidence)
    table = routing_table(
        s_cat, f_cat, x.route_margin, x.route_metric, {c: g["se"] for c, g in gaps.items()}, z
    )
    weights = traffic_weights(s_cat, list(table), OmegaConf.to_container(x.traffic) if x.traffic else None)
    for t, name, by_cat in (("commodity", student, s_cat), ("frontier", fname, f_cat)):
        tiers[t].update(eval_name=name, tokens=_tokens(by_cat),
                        eval={c: {k: v[k] for k in ("avg@k", "pass@k", "cons@k")} for c, v in by_cat.items()})  # fmt: skip
    return {
        "format": FORMAT,
        "units": UNITS,
        "tiers": tiers,
        "traffic": {"source": "export.traffic" if x.traffic else "share of eval problems", "weights": weights},
        "routing": {
            "by": "category (where requests carry one; otherwise see query_router)",
            "metric": x.route_metric, "margin": x.route_margin, "confidence": x.route_confidence, "z": z,
            "rule": "commodity iff gap + z * gap_se <= margin (gap = frontier - student, paired over problems)",
            "categories": table,
        },
        "policy_costs": policy_costs(s_cat, f_cat, table, prices, weights, x.route_metric),
        "query_router": query,
        "sampling": metrics["sampling"],
    }  # fmt: skip
