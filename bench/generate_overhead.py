"""Raw `vllm.LLM.generate` against the generate stage on the same prompts, in one run.

Both sides use the toy teacher, the same rendered prompts, n samples per problem and per-problem seeds;
engine start-up is excluded from both. The stage's time includes everything else it does: loading and
validating problems, rendering, row building, schema checks, fsynced appends, the merge and the manifest.

Each side runs in a fresh process (a deleted `LLM` can leave its engine-core process and threads behind,
which then compete with the next engine for the cores), in the order raw, stage, stage, raw, so that a
drift in machine load over the run weighs on both sides alike.

    .venv/bin/python bench/generate_overhead.py [--problems 512] [--n 8] [--rounds 2]

The last line is `RESULT generate_overhead ratio=... goal>=0.95 ...`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def raw_vllm(problems: list[dict], n: int, max_tokens: int) -> tuple[float, int]:
    """`vllm.LLM.generate` on the stage's own prompts, built by the stage's own `build_llm` from the toy
    experiment's resolved generate config: the same engine settings, nothing else of the stage."""
    from omegaconf import OmegaConf
    from vllm import SamplingParams

    from conftest import stage_config
    from distill.core.paths import Paths
    from distill.engines import problem_seed
    from distill.engines.chat import messages_for, render
    from distill.engines.vllm import build_llm

    cfg = stage_config("generate", [])
    engine, model = (OmegaConf.to_object(x) for x in (cfg.stage.engine, cfg.teacher))
    llm = build_llm(engine, model, Paths.for_run("runs", "x", REPO))
    tok = llm.get_tokenizer()
    template = cfg.stage.prompt_template
    prompts = [render(tok, messages_for(p["problem"], template)) for p in problems]
    params = [
        SamplingParams(
            n=n, temperature=0.8, top_p=1.0, max_tokens=max_tokens, seed=problem_seed(0, p["problem_id"])
        )
        for p in problems
    ]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    dt = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    del llm
    gc.collect()
    return dt, tokens


def stage(limit: int, n: int, max_tokens: int, root: str) -> tuple[float, int]:
    from conftest import run_distill

    m = run_distill(
        ["stage=generate", f"run.root={root}", f"data.train.limit={limit}", f"stage.sampling.n={n}",
         f"stage.sampling.max_tokens={max_tokens}", f"stage.chunk_problems={limit}", "stage.progress=false"]
    )["generate"]  # fmt: skip
    busy = m.timings["total_s"] - m.timings["engine_init_s"]
    tokens = round(m.metrics["mean_completion_tokens"] * m.metrics["rows"])
    return busy, tokens


def one_side(side: str, problems: int, n: int, max_tokens: int) -> tuple[float, int]:
    """(busy seconds, completion tokens) of one side, measured in a fresh process."""
    cmd = [sys.executable, __file__, "--side", side, "--problems", str(problems), "--n", str(n),
           "--max-tokens", str(max_tokens)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["s"], res["tokens"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=512)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=2, help="each round runs raw, stage, stage, raw")
    ap.add_argument("--side", choices=["raw", "stage"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        from distill.core.config import ProblemSource
        from distill.core.paths import Paths
        from distill.core.problems import load_problems

        with tempfile.TemporaryDirectory() as root:
            if args.side == "raw":
                src = ProblemSource(path="data/toy/problems/train.jsonl", limit=args.problems)
                problems = load_problems(src, Paths.for_run("runs", "x", REPO))
                s, tok = raw_vllm(problems, args.n, args.max_tokens)
            else:
                s, tok = stage(args.problems, args.n, args.max_tokens, root)
        print(json.dumps({"s": s, "tokens": tok}))
        return
    totals = {"raw": [0.0, 0], "stage": [0.0, 0]}
    for r in range(args.rounds):
        for side in ("raw", "stage", "stage", "raw"):
            s, tok = one_side(side, args.problems, args.n, args.max_tokens)
            totals[side][0] += s
            totals[side][1] += tok
            print(
                f"round {r + 1} {side:5s}: {tok:>8d} tokens in {s:7.2f} s = {tok / s:8.0f} tok/s", flush=True
            )
    (raw_s, raw_tok), (stage_s, stage_tok) = totals["raw"], totals["stage"]
    raw_tps, stage_tps = raw_tok / raw_s, stage_tok / stage_s
    print(f"\nworkload: {args.problems} problems x {args.n} samples, max_tokens {args.max_tokens}, "
          f"{2 * args.rounds} runs per side")  # fmt: skip
    print(f"raw vllm.LLM.generate : {raw_tok:>8d} tokens in {raw_s:7.2f} s = {raw_tps:8.0f} tok/s")
    print(f"generate stage        : {stage_tok:>8d} tokens in {stage_s:7.2f} s = {stage_tps:8.0f} tok/s")
    ratio = stage_tps / raw_tps
    print(f"stage / raw throughput: {ratio:.3f}  (goal >= 0.95)")
    same = "same_tokens" if stage_tok == raw_tok else f"tokens_differ({stage_tok}!={raw_tok})"
    print(
        f"RESULT generate_overhead ratio={ratio:.3f} goal>=0.95 {same} {'PASS' if ratio >= 0.95 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
