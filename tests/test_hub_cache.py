"""A hub id served from a local Hugging Face cache (nothing can be downloaded here): train, eval's engine
and curate's length measurement load `org/name` at the configured revision, not `<cwd>/org/name`.

The cache holds two snapshots: `refs/main` points at a copy of the toy teacher, the pinned revision is the
toy student, so loading the wrong one shows in the model's width. The test runs in a fresh process because
huggingface_hub reads HF_HOME once, at import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

from conftest import REPO, TOY

MAIN, PINNED = "a" * 40, "b" * 40

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "tests")
    from conftest import stage_config
    from distill.core.config import ModelRef
    from distill.core.io import write_rows
    from distill.core.paths import Paths
    from distill.core.schemas import TRAIN_PAIR
    from distill.curate.lengths import student_lengths, student_tokenizer
    from distill.engines.base import EngineConfig, Request, SamplingConfig, model_location
    from distill.engines.hf import HFEngine
    from distill.train.stage import phase_plan
    from distill.train.worker import build_trainer, init_distributed

    tmp, main, pinned = sys.argv[1:4]
    out = {}
    paths = Paths.for_run(tmp, "hub")
    out["resolved"] = model_location("toyorg/toy-student", paths)
    cfg = stage_config("train", ["stage=train", "student.path=toyorg/toy-student", f"student.revision={pinned}",
                                 "stage.num_processes=1", "stage.bf16=false", "stage.attn_implementation=sdpa"])
    pair = {"messages": [{"role": "user", "content": "1 + 1?"},
                         {"role": "assistant", "content": "<think>\\n1 + 1 = 2\\n</think>\\n\\n\\\\boxed{2}"}],
            "problem_id": "p", "sample_idx": 0, "phase": "phase1", "pass_rate": 1.0, "completion_tokens": 5}
    write_rows(f"{tmp}/phase1.jsonl", [pair] * 4, TRAIN_PAIR)
    plan = phase_plan(cfg, paths, "phase1", "k", None, ({"path": f"{tmp}/phase1.jsonl"}, None), paths.run_dir / "t")
    out["plan"] = [plan["init_model"], plan["init_revision"]]
    init_distributed(plan)
    out["train_width"] = build_trainer(plan).model.config.hidden_size
    for rev in (pinned, None):
        ref = ModelRef(name="s", path="toyorg/toy-student", revision=rev)
        eng = HFEngine(EngineConfig(backend="hf"), ref, paths)
        comp = eng.generate([Request("p", [{"role": "user", "content": "1 + 1?"}], 1, 0)],
                            SamplingConfig(n=1, max_tokens=8))[0][0]
        out[f"eval_width_{rev}"] = [eng.model.config.hidden_size, comp.completion_tokens]
    tok = student_tokenizer(ModelRef(path="toyorg/toy-student", revision=pinned), paths)
    out["student_tokens"] = student_lengths([{"prompt": "1 + 1?", "completion": "2"}], tok)[0]
    print("RESULT " + json.dumps(out))
    """
)


def _cache(home):
    repo = home / "hub" / "models--toyorg--toy-student"
    for rev, src in ((MAIN, TOY / "teacher"), (PINNED, TOY / "student")):
        shutil.copytree(src, repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(MAIN)


def test_hub_id_from_a_local_cache_at_its_revision(tmp_path):
    home = tmp_path / "hf"
    _cache(home)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "WANDB_MODE": "disabled"}  # fmt: skip
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), MAIN, PINNED],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(line)  # for the note: what each stage loaded
    import json

    out = json.loads(line.removeprefix("RESULT "))
    assert out["resolved"] == "toyorg/toy-student"  # not <cwd>/toyorg/toy-student
    assert out["plan"] == ["toyorg/toy-student", PINNED]
    assert out["train_width"] == 64  # the pinned snapshot (the student), not refs/main (the teacher, 128)
    assert out[f"eval_width_{PINNED}"][0] == 64 and out[f"eval_width_{PINNED}"][1] > 0
    assert out["eval_width_None"][0] == 128  # no revision: refs/main
    assert out["student_tokens"] > 5
