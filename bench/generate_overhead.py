"""Raw `vllm.LLM.generate` against the generate stage on the same prompts, in one run.

Both sides use the toy teacher, the same rendered prompts, n samples per problem and per-problem seeds;
engine start-up is excluded from both. The stage's time includes everything else it does: loading and
validating problems, rendering, row building, schema checks, fsynced appends, the merge and the manifest.

    .venv/bin/python bench/generate_overhead.py [--problems 512] [--n 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def raw_vllm(problems: list[dict], n: int, max_tokens: int) -> tuple[float, int]:
    from vllm import LLM, SamplingParams

    from distill.chat import messages_for, render
    from distill.config import DEFAULT_PROMPT
    from distill.engines import problem_seed

    # Same engine settings as the stage on CPU (chunked prefill off: vLLM 0.32 seeded-sampling bug).
    llm = LLM(
        model=str(REPO / "data/toy/teacher"),
        dtype="float32",
        max_model_len=512,
        seed=0,
        enable_chunked_prefill=False,
        max_num_batched_tokens=8192,
    )
    tok = llm.get_tokenizer()
    prompts = [render(tok, messages_for(p["problem"], DEFAULT_PROMPT)) for p in problems]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=512)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args()
    from distill.config import ProblemSource
    from distill.paths import Paths
    from distill.problems import load_problems

    problems = load_problems(
        ProblemSource(path="data/toy/problems/train.jsonl", limit=args.problems),
        Paths.for_run("runs", "x", REPO),
    )
    with tempfile.TemporaryDirectory() as root:
        raw_s, raw_tok = raw_vllm(problems, args.n, args.max_tokens)
        stage_s, stage_tok = stage(args.problems, args.n, args.max_tokens, root)
    raw_tps, stage_tps = raw_tok / raw_s, stage_tok / stage_s
    print(f"\nworkload: {len(problems)} problems x {args.n} samples, max_tokens {args.max_tokens}")
    print(f"raw vllm.LLM.generate : {raw_tok:>8d} tokens in {raw_s:7.2f} s = {raw_tps:8.0f} tok/s")
    print(f"generate stage        : {stage_tok:>8d} tokens in {stage_s:7.2f} s = {stage_tps:8.0f} tok/s")
    print(f"stage / raw throughput: {stage_tps / raw_tps:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
