"""The export stage: the trained student as a serving-tier bundle, plus its place in a two-tier router.

The bundle is what serving tools load as is: safetensors weights (already consolidated from ZeRO shards by
train), config, tokenizer with the chat template used in training, and a generation config whose EOS is
the end-of-turn token and whose sampling defaults are the ones eval measured with. Beside them: a model
card with the lineage from the manifests, the vLLM launch spec, and the router's commodity-tier entry
with a routing table and the cost per correct answer of each routing policy.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.core.io import atomic_write_json, atomic_write_text, sha256_file
from distill.core.manifest import MANIFEST, Manifest, checked_output, config_key, up_to_date, upstream
from distill.core.paths import Paths
from distill.core.tracking import log_stage_outputs
from distill.export.router import Price, policy_costs, routing_table

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
    input_per_mtok: float = 0.1
    output_per_mtok: float = 0.1


@dataclass
class ExportConfig:
    name: str = "export"
    model: str = "model"  # a train output: `model` (the last phase) or a phase name
    eval_name: str | None = None  # the student's name in eval's metrics (default: the phase exported)
    frontier_eval_name: str = "teacher"
    served_name: str | None = None  # default: <run.name>-student
    endpoint: str = "http://127.0.0.1:8000/v1"
    dtype: str = "bfloat16"
    max_model_len: int = 32768
    reasoning_parser: str = "qwen3"
    extra_serve_args: list[str] = field(default_factory=list)
    commodity_price: PriceConfig = field(default_factory=PriceConfig)
    frontier_price: PriceConfig = field(default_factory=lambda: PriceConfig(3.0, 15.0))
    route_margin: float = 0.05
    route_metric: str = "avg@k"


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


def serve_spec(bundle: Path, x: DictConfig, served: str) -> dict:
    args = [
        "--model", str(bundle), "--served-model-name", served, "--dtype", x.dtype,
        "--max-model-len", str(x.max_model_len), "--reasoning-parser", x.reasoning_parser,
        "--generation-config", "auto", *x.extra_serve_args,
    ]  # fmt: skip
    cmd = ["vllm", "serve", str(bundle), *args[2:]]
    return {"engine": "vllm", "model": str(bundle), "served_model_name": served, "dtype": x.dtype,
            "max_model_len": x.max_model_len, "reasoning_parser": x.reasoning_parser,
            "args": args, "command": shlex.join(cmd),
            "command_module": shlex.join(["python", "-m", "vllm.entrypoints.openai.api_server", *args])}  # fmt: skip


def router_entry(x: DictConfig, served: str, metrics: dict, student: str) -> dict:
    s_by_cat = {c: v for c, v in metrics["models"][student].items() if c != "all"}
    f_by_cat = {c: v for c, v in metrics["models"][x.frontier_eval_name].items() if c != "all"}
    table = routing_table(s_by_cat, f_by_cat, x.route_margin, x.route_metric)
    prices = {"commodity": Price(**x.commodity_price), "frontier": Price(**x.frontier_price)}
    costs = policy_costs(s_by_cat, f_by_cat, table, prices, metric=x.route_metric)
    return {
        "tier": "commodity",
        "model_id": served,
        "endpoint": x.endpoint,
        "price_per_mtok": {"input": x.commodity_price.input_per_mtok, "output": x.commodity_price.output_per_mtok},
        "frontier_price_per_mtok": {"input": x.frontier_price.input_per_mtok, "output": x.frontier_price.output_per_mtok},
        "eval": {c: {k: v[k] for k in ("avg@k", "pass@k", "cons@k", "mean_tokens")} for c, v in metrics["models"][student].items()},
        "sampling": metrics["sampling"],
        "routing": {"metric": x.route_metric, "margin": x.route_margin, "frontier_model": x.frontier_eval_name, "categories": table},
        "policy_costs": costs,
    }  # fmt: skip


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


def run(cfg: DictConfig, paths: Paths) -> Manifest:
    from distill.export.model_card import model_card

    x, t0 = cfg.stage, time.perf_counter()
    train, ev = upstream(paths, "train", "export"), upstream(paths, "eval", "export")
    if x.model not in train.outputs:
        raise KeyError(f"export.model={x.model!r} is not a train output (have: {', '.join(train.outputs)})")
    out = paths.stage_dir(STAGE)
    keyed = {"stage": OmegaConf.to_container(x, resolve=True), "run": cfg.run.name}
    key = config_key(keyed, [train.key, ev.key])
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
    spec = serve_spec(bundle, x, served)
    entry = router_entry(x, served, metrics, student)
    lin = lineage(paths)
    atomic_write_json(out / "serve.json", spec)
    atomic_write_text(
        out / "serve.sh",
        "#!/usr/bin/env bash\n# Launch the commodity-tier model with vLLM.\nexec "
        + spec["command"]
        + ' "$@"\n',
        mode=0o777,  # executable, less the umask, as a script written by hand would be
    )
    atomic_write_text(out / "router.yaml", OmegaConf.to_yaml(OmegaConf.create({"commodity": entry})))
    atomic_write_text(bundle / "README.md", model_card(cfg, paths, served, student, metrics, entry, lin, gen))
    m = Manifest(
        stage=STAGE, key=key, config=keyed,
        inputs=[{"name": "train", "path": str(src), "sha256": None, "key": train.key},
                {"name": "eval", "path": ev.outputs["metrics"]["path"], "sha256": None, "key": ev.key}],
        outputs={"bundle": {"path": str(bundle), "files": files + ["generation_config.json", "README.md"]},
                 "serve": {"path": str(out / "serve.json")}, "router": {"path": str(out / "router.yaml")},
                 "serve_sh": {"path": str(out / "serve.sh")},
                 "weights_sha256": {"path": str(bundle), "sha256": {f: sha256_file(bundle / f) for f in files if f.endswith(".safetensors")}}},
        metrics={"routed": entry["policy_costs"]["routed"], "commodity_categories": [c for c, r in entry["routing"]["categories"].items() if r["tier"] == "commodity"]},
        timings={"total_s": time.perf_counter() - t0},
    )  # fmt: skip
    m.write(out)
    log_stage_outputs(cfg, paths, m, "model", {"bundle": bundle, "router.yaml": out / "router.yaml"})
    print(f"[distill] export: bundle at {bundle}\n[distill] serve with: {spec['command']}")
    return m
