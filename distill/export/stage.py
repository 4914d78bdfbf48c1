"""The export stage: the trained student as a serving-tier bundle, plus its place in a two-tier router.

The bundle is what serving tools load as is: safetensors weights (already consolidated from ZeRO shards by
train), config, tokenizer with the chat template used in training, and a generation config whose EOS is
the end-of-turn token and whose sampling defaults are the ones eval measured with. Beside them: a model
card with the lineage from the manifests, the vLLM launch (serve.sh / serve.json, movable), router.yaml
(both tiers, prices, per-category decisions with their uncertainty), the query-level router trained on
eval's and curate's measurements (query_router.json, held-out report in routing.json) and a LiteLLM
Router config for both tiers (litellm.yaml).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_json, atomic_write_text, sha256_file
from distill.core.manifest import MANIFEST, Manifest, checked_output, config_key, up_to_date, upstream
from distill.core.paths import Paths
from distill.core.tracking import log_stage_outputs
from distill.export.query_router import QueryRouterConfig
from distill.export.router import Price, litellm_model_list
from distill.export.serve import serve_script, serve_spec, write_script
from distill.export.tiers import (
    curate_pass_rates,
    eval_problems,
    problems_for_router,
    router_document,
)

STAGE = "export"
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass
class PriceConfig:
    """USD per million tokens."""

    input_per_mtok: float = 0.1
    output_per_mtok: float = 0.1


@dataclass
class FrontierConfig:
    """The frontier tier as the router calls it: an OpenAI-compatible endpoint and its served model name."""

    model: str | None = None  # the served model name at base_url (e.g. gpt-5, or a vLLM --served-model-name)
    base_url: str | None = None
    provider: str = "openai"  # LiteLLM provider prefix (openai = any OpenAI-compatible endpoint)
    api_key_env: str | None = "OPENAI_API_KEY"  # read from the environment by the router, written nowhere
    eval_name: str = "teacher"  # its name in eval's metrics (what its accuracy and token counts come from)
    prices: PriceConfig = field(default_factory=lambda: PriceConfig(3.0, 15.0))


@dataclass
class ExportConfig:
    name: str = "export"
    model: str = "model"  # a train output: `model` (the last phase) or a phase name
    eval_name: str | None = None  # the student's name in eval's metrics (default: the phase exported)
    served_name: str | None = None  # default: <run.name>-student
    endpoint: str = "http://127.0.0.1:8000/v1"  # where the router reaches the commodity tier
    commodity_api_key_env: str | None = None  # None: the served bundle takes no key
    # the launch: device `auto` is this machine's (cpu or gpu); engine settings left None take the
    # project engine's defaults for that device (engines.vllm.llm_kwargs)
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int | None = None  # default: the endpoint's port
    dtype: str = "bfloat16"
    max_model_len: int = 32768
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool | None = None
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool = True
    kv_cache_gib: int = 1  # CPU: VLLM_CPU_KVCACHE_SPACE
    reasoning_parser: str = "qwen3"
    extra_serve_args: list[str] = field(default_factory=list)
    # routing
    commodity_price: PriceConfig = field(default_factory=PriceConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    route_margin: float = 0.05
    route_confidence: float = (
        0.9  # one-sided: commodity only where the gap's upper bound is within the margin
    )
    route_metric: str = "avg@k"
    traffic: dict[str, float] | None = None  # category -> weight; None: the eval problems' mix
    query_router: QueryRouterConfig = field(default_factory=QueryRouterConfig)


Config = ExportConfig


def _copy_model(src: Path, dst: Path) -> list[str]:
    """Copies the weights and tokenizer; refuses pickled weights (a bundle loads as safetensors only)."""
    weights = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.safetensors.index.json"))
    if not weights:
        raise FileNotFoundError(f"{src}: no safetensors weights to export")
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in [*weights, *(src / n for n in MODEL_FILES)]:
        if f.exists():
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    return copied


def _generation_config(bundle: Path, sampling: dict, max_tokens: int) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundle)
    eot = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
    gen = {
        "eos_token_id": [eot] + ([tok.pad_token_id] if tok.pad_token_id not in (None, eot) else []),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": None,
        "do_sample": sampling["temperature"] > 0,
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
        "top_k": sampling["top_k"] if sampling["top_k"] > 0 else 0,
        "max_new_tokens": max_tokens,
    }
    atomic_write_json(bundle / "generation_config.json", gen)
    return gen


def lineage(paths: Paths) -> dict:
    """Hashes from the problems to the checkpoint, taken from each finished stage's manifest."""
    out = {}
    for stage in ("generate", "curate", "train", "eval"):
        if (paths.stage_dir(stage) / MANIFEST).exists():
            m = upstream(paths, stage, "export")
            out[stage] = {
                "key": m.key,
                "inputs": [{k: i.get(k) for k in ("name", "sha256", "key")} for i in m.inputs],
            }
    return out


def _port(x: DictConfig) -> int:
    if x.port is not None:
        return int(x.port)
    u = urlparse(x.endpoint)
    return u.port or (443 if u.scheme == "https" else 8000)


def _query_router(
    x: DictConfig, pp: dict, prices: dict, paths: Paths, out: Path
) -> tuple[dict | None, dict | None]:
    """Trains, calibrates and writes the query router; returns its router.yaml section and its report."""
    from distill.export.routing_eval import build

    c = QueryRouterConfig(**OmegaConf.to_container(x.query_router, resolve=True))
    if not c.enabled:
        return None, None
    problems = problems_for_router(pp["commodity"], pp["frontier"], prices)
    router, report = build(problems, curate_pass_rates(paths), c)
    atomic_write_json(out / "query_router.json", router.to_json())
    atomic_write_json(out / "routing.json", report)
    section = {
        "path": "query_router.json", "report": "routing.json", "litellm_config": "litellm.yaml",
        "reads": "the last user message", "returns": "a tier name = a LiteLLM model group",
        "threshold": router.threshold, "target": report["target"],
        "held_out": {"problems": report["problems"], "folds": report["folds"], **report["at_threshold"]["classifier"],
                     "apgr": report["pgr"]["classifier"]["apgr"]},
    }  # fmt: skip
    return section, report


def _write_bundle_files(out: Path, spec: dict, doc: dict) -> None:
    atomic_write_json(out / "serve.json", spec)
    write_script(out / "serve.sh", serve_script(spec))
    atomic_write_text(out / "router.yaml", OmegaConf.to_yaml(OmegaConf.create(doc)))
    atomic_write_text(
        out / "litellm.yaml", OmegaConf.to_yaml(OmegaConf.create(litellm_model_list(doc["tiers"])))
    )


def _print_summary(out: Path, spec: dict, report: dict | None) -> None:
    """The bundle, its launch and the router's calibrated costs; the whole routing curve is in
    routing.json, the run report and export/plots/routing_curve.png (the console stays short)."""
    from distill.export.routing_eval import cost_table

    print(f"[distill] export: bundle at {out / 'model'}\n[distill] serve with (from {out}): {spec['usage']}")
    if report:
        print("[distill] query router at the calibrated threshold (routing curve: routing.json):")
        print("\n".join(cost_table(report)))


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    from distill.export.model_card import model_card

    x, t0 = cfg.stage, time.perf_counter()
    train, ev = upstream(paths, "train", "export"), upstream(paths, "eval", "export")
    has_curate = (paths.stage_dir("curate") / MANIFEST).exists()
    cur_key = [upstream(paths, "curate", "export").key] if has_curate else []
    if x.model not in train.outputs:
        raise KeyError(f"export.model={x.model!r} is not a train output (have: {', '.join(train.outputs)})")
    out = paths.stage_dir(STAGE)
    keyed = {"stage": OmegaConf.to_container(x, resolve=True), "run": cfg.run.name}
    key = config_key(keyed, [train.key, ev.key, *cur_key])
    if m := up_to_date(out, key, cfg.force, "export"):
        return m
    checked_output(train, x.model, "export")  # the weights and the metrics, as their stages wrote them
    checked_output(ev, "metrics", "export")
    src = Path(train.outputs[x.model]["path"])
    student = x.eval_name or (Path(src).parent.name if x.model == "model" else x.model)
    metrics = json.loads(Path(ev.outputs["metrics"]["path"]).read_text())
    if student not in metrics["models"]:
        raise KeyError(
            f"export: eval has no model {student!r} (have: {', '.join(metrics['models'])}); set export.eval_name"
        )
    served = x.served_name or f"{cfg.run.name}-student"
    bundle = out / "model"
    files = _copy_model(src, bundle)
    gen = _generation_config(bundle, metrics["sampling"], metrics["sampling"]["max_tokens"])
    spec = serve_spec(x, served, _port(x), paths)
    cat_field = ev.config.get("category_field", "category")
    pp = {"commodity": eval_problems(paths, student, cat_field),
          "frontier": eval_problems(paths, x.frontier.eval_name, cat_field)}  # fmt: skip
    prices = {"commodity": Price(**x.commodity_price), "frontier": Price(**x.frontier.prices)}
    query, report = _query_router(x, pp, prices, paths, out)
    doc = router_document(x, served, metrics, student, pp, query)
    lin = lineage(paths)
    weights = {f: sha256_file(bundle / f) for f in files if f.endswith(".safetensors")}
    _write_bundle_files(out, spec, doc)
    atomic_write_text(
        bundle / "README.md",
        model_card(cfg, paths, served, student, metrics, doc, lin, gen, spec, report, weights),
    )
    written = [
        "serve.json",
        "serve.sh",
        "router.yaml",
        "litellm.yaml",
        *(["query_router.json", "routing.json"] if query else []),
    ]
    m = Manifest(
        stage=STAGE, key=key, config=keyed,
        inputs=[{"name": "train", "path": str(src), "sha256": None, "key": train.key},
                {"name": "eval", "path": ev.outputs["metrics"]["path"], "sha256": None, "key": ev.key},
                *([{"name": "curate", "path": str(paths.stage_dir("curate")), "sha256": None, "key": cur_key[0]}] if cur_key else [])],
        outputs={"bundle": {"path": str(bundle), "files": files + ["generation_config.json", "README.md"]},
                 **{n.replace(".json", "").replace(".yaml", "").replace(".", "_"): {"path": str(out / n)} for n in written},
                 "weights_sha256": {"path": str(bundle), "sha256": weights}},
        metrics={"routed": doc["policy_costs"]["routed"],
                 "commodity_categories": [c for c, r in doc["routing"]["categories"].items() if r["tier"] == "commodity"],
                 **({"query_router": query["held_out"]} if query else {})},
        timings={"total_s": time.perf_counter() - t0},
    )  # fmt: skip
    m.write(out)
    log_stage_outputs(cfg, paths, m, "model", {"bundle": bundle, **{n: out / n for n in written}})
    _print_summary(out, spec, report)
    return m
