"""Issue 14's cases (runs, inputs, lineage, secrets) against a source tree; prints one outcome per case.

    python scripts/issue14_cases.py --tree .                     # this checkout
    git archive c041116 | tar -x -C /tmp/before && python scripts/issue14_cases.py --tree /tmp/before

Each case runs in a fresh process with PYTHONPATH=<tree> and reports the last line of its error (or
`ok: ...`), so the same script gives both columns of the before/after table. CPU, hf backend, ~3 min.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRE = """
import json, os, sys, pathlib
from pathlib import Path
T = Path(sys.argv[1])
"""
CASES = {
    "non-UTF-8 problems": """
(T/'p.jsonl').write_bytes(b'{"id": "a", "problem": "caf\\xe9", "answer": "1"}\\n')
from distill.core.problems import load_problems; from distill.core.config import ProblemSource; from distill.core.paths import Paths
load_problems(ProblemSource(path=str(T/'p.jsonl')), Paths.for_run('runs', 't', T))""",
    "empty problems file": "GEN data.train.path={T}/empty.jsonl",
    "directory as problems": "GEN data.train.path={T}",
    "n=0": "GEN stage.sampling.n=0",
    "n=-1": "GEN stage.sampling.n=-1",
    "num_shards=0": "GEN stage.num_shards=0",
    "chunk_problems=0": "GEN stage.chunk_problems=0",
    "limit=3 num_shards=4 (twice)": "GEN2 data.train.limit=3 stage.num_shards=4 stage.sampling.n=1",
    "answer is a list": """
(T/'p.jsonl').write_text('{"id": "a", "problem": "1+1", "answer": [1, 2]}\\n')
from distill.core.problems import load_problems; from distill.core.config import ProblemSource; from distill.core.paths import Paths
print('ok: answer =', repr(load_problems(ProblemSource(path=str(T/'p.jsonl')), Paths.for_run('runs', 't', T))[0]['answer']))""",
    "id is null": """
(T/'p.jsonl').write_text('{"id": null, "problem": "1+1", "answer": "2"}\\n')
from distill.core.problems import load_problems; from distill.core.config import ProblemSource; from distill.core.paths import Paths
print('ok: problem_id =', repr(load_problems(ProblemSource(path=str(T/'p.jsonl')), Paths.for_run('runs', 't', T))[0]['problem_id']))""",
    "manifest without outputs": """
d = T/'runs'/'t'/'generate'; d.mkdir(parents=True); (d/'manifest.json').write_text('{"stage": "generate", "key": "k", "config": {}}')
from distill.core.manifest import upstream; from distill.core.paths import Paths
upstream(Paths.for_run('runs', 't', T), 'generate', 'curate').output_path('samples')""",
    "half-written newest checkpoint": """
import torch; from safetensors.torch import save_file
for step, state in ((10, True), (14, False)):
    c = T/'checkpoints'/f'checkpoint-{step}'; c.mkdir(parents=True); save_file({'w': torch.zeros(4)}, str(c/'model.safetensors'))
    state and (c/'trainer_state.json').write_text('{}')
from distill.train.worker import last_checkpoint
print('ok: resumes from', last_checkpoint(T))""",
    "atomic write modes": """
os.umask(0o022)
from distill.core.io import atomic_write_text
atomic_write_text(T/'a.txt', 'x')
print('ok: new file mode', oct((T/'a.txt').stat().st_mode & 0o777))""",
    "scrubber": """
try:
    from distill.core.secrets import scrub
except ImportError:
    from distill.core.tracking import scrub
c = {'eos_token': 'e', 'pad_token': 'p', 'max_tokens': 1, 'extra_body': {'headers': {'Authorization': 'Bearer sk-1'}},
     'base_url': 'https://u:sk-2@h/v1'}
print('ok: kept', json.dumps(scrub(c)))""",
}
GEN = ["stage=generate", "stage.engine.backend=hf", "stage.engine.hf_threads=1", "stage.progress=false",
       "wandb.enabled=false", "data.train.limit=4", "stage.sampling.n=2"]  # fmt: skip


def last_line(out: subprocess.CompletedProcess) -> str:
    text = (out.stdout + out.stderr).strip().splitlines()
    errs = [ln for ln in text if re.match(r"^[\w.]+(Error|Exception|Locked|Mismatch): |^ok:", ln)]
    return (errs or text or ["(no output)"])[-1][:300]


def gen(tree: Path, tmp: Path, args: list[str], times: int = 1) -> str:
    (tmp / "empty.jsonl").write_text("")
    cmd = [sys.executable, "-m", "distill", *GEN, f"run.root={tmp}/runs", *(a.format(T=tmp) for a in args)]
    out = None
    for _ in range(times):
        out = subprocess.run(cmd, cwd=tree, env=env(tree), capture_output=True, text=True)
    return ("ok: exit 0" if out.returncode == 0 else f"exit {out.returncode}: ") + (
        "" if out.returncode == 0 else last_line(out)
    )


def env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def twin(tree: Path, tmp: Path) -> str:
    """Two drivers on one run at once, then a plain rerun."""
    cmd = [sys.executable, "-m", "distill", *GEN, "data.train.limit=16", "stage.chunk_problems=2",
           f"run.root={tmp}/runs"]  # fmt: skip
    t0 = time.monotonic()
    a = subprocess.Popen(
        cmd, cwd=tree, env=env(tree), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    time.sleep(8)
    b = subprocess.run(cmd, cwd=tree, env=env(tree), capture_output=True, text=True)
    tb = time.monotonic() - t0
    a_out = a.communicate()[0]
    again = subprocess.run(cmd, cwd=tree, env=env(tree), capture_output=True, text=True)
    a_res = (
        "0"
        if a.returncode == 0
        else f"{a.returncode} ({last_line(subprocess.CompletedProcess([], 0, a_out, ''))})"
    )
    return f"first exit {a_res}; second exit {b.returncode} after {tb:.0f}s ({last_line(b)}); rerun exit {again.returncode}"


def truncated(tree: Path, tmp: Path) -> str:
    gen(tree, tmp, [])
    f = next((tmp / "runs" / "toy" / "generate").rglob("shard-*.parquet"))  # a shard cut short
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    cmd = [sys.executable, "-m", "distill", "stage=curate", f"run.root={tmp}/runs", "stage.progress=false",
           "wandb.enabled=false"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tree, env=env(tree), capture_output=True, text=True)
    return (
        "exit 0: curate accepted a shard cut in half"
        if out.returncode == 0
        else f"exit {out.returncode}: {last_line(out)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default=".")
    ap.add_argument("--only", default=None, help="substring of the case names to run")
    tree = Path(ap.parse_args().tree).resolve()
    only = ap.parse_args().only
    special = {"two drivers on one run": twin, "truncated generate shard -> curate": truncated}
    for name in [*CASES, *special]:
        if only and only not in name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if name in special:
                res = special[name](tree, tmp)
            elif CASES[name].startswith("GEN"):
                head, *args = CASES[name].split()
                res = gen(tree, tmp, args, times=2 if head == "GEN2" else 1)
            else:
                out = subprocess.run([sys.executable, "-c", PRE + CASES[name], str(tmp)], cwd=tree, env=env(tree),
                                     capture_output=True, text=True)  # fmt: skip
                res = last_line(out)
        print(f"| {name} | {res} |", flush=True)


if __name__ == "__main__":
    main()
