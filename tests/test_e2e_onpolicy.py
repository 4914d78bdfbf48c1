"""The e2e toy run's third phase, on-policy distillation (issue 16): trained on 2 CPU ranks from phase 2's
weights, and, in a copy of the run, killed after its first checkpoint and resumed.

The run is conftest's `toy_run`, the same one tests/test_e2e.py checks (one xdist group: built once).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, distill_cmd, procs_with

pytestmark = pytest.mark.slow
PHASES = ["phase1", "phase2", "onpolicy"]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_onpolicy_phase_trained_on_two_ranks_from_phase2(toy_run):
    run = toy_run[0]
    p2, op = run / "train" / "phase2", run / "train" / "onpolicy"
    m = json.loads((run / "train" / "manifest.json").read_text())
    mm = m["metrics"]["onpolicy"]
    assert mm["kind"] == "on_policy" and mm["world_size"] == 2 and mm["global_step"] == mm["max_steps"] == 16
    plan = json.loads((op / "plan.json").read_text())
    assert plan["kind"] == "on_policy" and plan["init_model"] == str(p2 / "final")
    assert Path(plan["on_policy"]["teacher"]).resolve() == (REPO / "data" / "toy" / "teacher").resolve()
    assert plan["on_policy"]["beta"] == 1.0  # reverse KL
    assert m["outputs"]["model"]["path"] == str(op / "final") and m["config"]["phases"] == PHASES
    w2, w3 = weights(p2 / "final"), weights(op / "final")
    assert w2.keys() == w3.keys() and any(not torch.equal(w2[k], w3[k]) for k in w2)
    assert mm["teacher_forward_tokens_per_step"] > mm["student_generated_tokens_per_step"] > 0
    hist = json.loads((op / "train_log.json").read_text())["log_history"]
    losses = [r["loss"] for r in hist if "loss" in r]  # logged every step; that it falls: test_on_policy.py
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)


def test_kill_during_onpolicy_resumes_from_its_checkpoint(toy_run, tmp_path):
    """A copy of the run with phases 1-2 done retrains only the on-policy phase, at lr 0: SIGKILLed after
    its first checkpoint and rerun, it resumes there, and its final weights equal phase 2's, tensor for
    tensor (so it also started from them)."""
    src = toy_run[0]
    root = tmp_path / "r"
    for rel in ("curate", "train/phase1", "train/phase2"):  # up to date in the copy: not retrained
        shutil.copytree(src / rel, root / "toy" / rel, symlinks=True)
    # 8 steps of shorter samples still put a checkpoint (step 2) between start and end
    ov = ["stage=train", f"run.root={root}", "wandb.enabled=false", "stage.save_steps=2",
          "stage.per_phase.onpolicy.lr=0.0", "stage.per_phase.onpolicy.epochs=0.16",
          "stage.per_phase.onpolicy.max_new_tokens=24"]  # fmt: skip
    op = root / "toy" / "train" / "onpolicy"
    proc = subprocess.Popen(distill_cmd(*ov), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not list(op.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, (
            "the phase ended or stalled before a checkpoint"
        )
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while procs_with(str(op / "plan.json")):
        assert time.time() < deadline, "orphaned ranks survived the kill"
        time.sleep(0.2)
    assert not (op / "manifest.json").exists()
    out = subprocess.run(distill_cmd(*ov), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train phase1: up to date" in out.stdout and "train phase2: up to date" in out.stdout
    m = json.loads((op / "manifest.json").read_text())["metrics"]
    assert m["resumed_from"] and 2 <= m["resume_step"] < m["global_step"] == m["max_steps"]
    assert "resuming from" in (op / "ranks.log").read_text()
    w2, w3 = weights(root / "toy" / "train" / "phase2" / "final"), weights(op / "final")
    assert w2.keys() == w3.keys()
    for k in w2:
        assert torch.equal(w2[k], w3[k]), k
