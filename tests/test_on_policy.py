"""The on_policy train phase (distill.train.on_policy): the loss against closed-form KL, config-time checks,
and a real phase on 2 CPU ranks after an SFT phase: starts from its weights, loss goes down, a rerun is a
no-op, a kill mid-phase resumes from its checkpoint.
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
from test_train import fake_curate, student_dir

from conftest import REPO, TOY, distill_cmd, procs_with, run_distill

TEACHER = TOY / "teacher"
FAST = ["stage.max_length=256", "stage.per_device_batch_size=2", "stage.lr=3e-3", "stage.logging_steps=1"]
ONPOL = [
    "stage.phases=[phase1,onpolicy]",
    "stage.per_phase.phase1.epochs=1",
    "stage.per_phase.onpolicy.source=phase1",  # prompts: phase 1's curated problems
    "stage.per_phase.onpolicy.max_new_tokens=48",
    "stage.per_phase.onpolicy.epochs=2",
    "stage.per_phase.onpolicy.lr=2e-3",
    "wandb.enabled=false",
]


def overrides(root: Path, *extra: str) -> list[str]:
    return ["stage=train", f"run.root={root}", "run.name=t", f"teacher.path={TEACHER}", *FAST, *ONPOL, *extra]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


# p_teacher = (0.9, 0.1), p_student = (0.5, 0.5), one completion token
FORWARD_KL = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(teacher || student) = 0.368064
REVERSE_KL = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(student || teacher) = 0.510826


@pytest.mark.parametrize("beta,expected", [(0.0, FORWARD_KL), (1.0, REVERSE_KL)])
def test_loss_matches_closed_form_kl(beta, expected):
    """The phase's loss is TRL's chunked divergence over hidden states x LM head: with an identity head the
    hidden states are the logits, so log-probabilities in give the textbook KL out."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    s = torch.log(torch.tensor([[[0.5, 0.5], [0.3, 0.7]]]))  # second position masked out
    t = torch.log(torch.tensor([[[0.9, 0.1], [0.01, 0.99]]]))
    eye = torch.eye(2)
    mask = torch.tensor([[1, 0]])
    loss, _, n = _chunked_divergence_loss(s.clone().requires_grad_(), t, eye, eye, mask, beta)
    assert n.item() == 1
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_plan_carries_beta_and_cpu_generation(tmp_path):
    from distill.train.on_policy import distillation_config, resolve
    from distill.train.stage import default_hparams, worker_plan

    spec = resolve({"beta": 0.0, "max_new_tokens": 7, "lr": 1.0}, "stage.per_phase.x") | {"teacher": "t"}
    plan = worker_plan(phase="x", kind="on_policy", on_policy=spec, init_model="s", train_file="p",
                       output_dir=tmp_path, hparams=default_hparams(progress=False))  # fmt: skip
    from accelerate.state import AcceleratorState, PartialState

    from distill.train.worker import init_distributed

    init_distributed(plan)
    try:
        args = distillation_config(plan)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._reset_state()
    assert args.beta == 0.0 and args.max_completion_length == 7 and not args.use_vllm  # CPU: generate
    assert not args.gradient_checkpointing and not args.bf16
    with pytest.raises(ValueError, match="beta=1.5"):
        resolve({"beta": 1.5}, "stage.per_phase.x")
    with pytest.raises(ValueError, match="needs on_policy settings"):
        worker_plan(phase="x", kind="on_policy", init_model="s", train_file="p", output_dir=tmp_path,
                    hparams=default_hparams())  # fmt: skip


def test_prompts_are_the_curated_problems(tmp_path):
    from distill.train.on_policy import prompt_rows

    files = fake_curate(tmp_path, rows_per_phase=6)
    rows = [json.loads(x) for x in files["phase1"].read_text().splitlines()]
    rows.append(rows[0] | {"sample_idx": 1})  # a second trace of one problem: one prompt
    files["phase1"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = prompt_rows(files["phase1"])
    assert [p["problem_id"] for p in prompts] == [f"phase1-{i}" for i in range(6)]
    assert prompts[0]["prompt"] == rows[0]["messages"][:-1] and prompts[0]["prompt"][-1]["role"] == "user"


def test_vocab_mismatch_fails_at_config_time(tmp_path):
    """A teacher with another vocabulary fails before phase 1 trains, naming both tokenizers."""
    from transformers import AutoTokenizer

    other = tmp_path / "other-teacher"
    tok = AutoTokenizer.from_pretrained(TEACHER)
    tok.add_tokens(["<|not-in-the-student|>"])
    tok.save_pretrained(other)
    fake_curate(tmp_path / "t", rows_per_phase=8)
    ov = overrides(tmp_path, f"student.path={TOY / 'student'}") + [f"teacher.path={other}"]
    with pytest.raises(ValueError, match="one vocabulary") as e:
        run_distill(ov)
    assert str(other) in str(e.value) and str(TOY / "student") in str(e.value)
    assert not (tmp_path / "t" / "train" / "phase1").exists()  # nothing trained first


@pytest.fixture(scope="module")
def onpolicy_run(tmp_path_factory):
    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("onpolicy")
    fake_curate(root / "t", rows_per_phase=32)
    ov = overrides(root, f"student.path={student}")
    t0 = time.perf_counter()
    m = run_distill(ov)["train"]
    print(f"phase1 + onpolicy on 2 ranks: {time.perf_counter() - t0:.1f}s")
    return root / "t", ov, m


def test_phase_trains_on_two_ranks_from_the_sft_phase(onpolicy_run):
    run, _, m = onpolicy_run
    p1, op = run / "train" / "phase1", run / "train" / "onpolicy"
    mm = m.metrics["onpolicy"]
    assert mm["kind"] == "on_policy" and mm["world_size"] == 2 and mm["global_step"] == mm["max_steps"] == 16
    plan = json.loads((op / "plan.json").read_text())
    assert plan["kind"] == "on_policy" and plan["init_model"] == str(p1 / "final")
    assert plan["on_policy"]["teacher"] == str(TEACHER) and plan["on_policy"]["beta"] == 1.0
    assert m.outputs["model"]["path"] == str(op / "final")  # export ships the last phase by default
    assert m.config["phases"] == ["phase1", "onpolicy"]  # eval evaluates every phase listed here
    w1, w2 = weights(p1 / "final"), weights(op / "final")
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)
    assert mm["teacher_forward_tokens_per_step"] > mm["student_generated_tokens_per_step"] > 0


def test_loss_goes_down(onpolicy_run):
    hist = json.loads((onpolicy_run[0] / "train" / "onpolicy" / "train_log.json").read_text())["log_history"]
    losses = [r["loss"] for r in hist if "loss" in r]
    assert len(losses) >= 12 and all(math.isfinite(x) for x in losses)
    head, tail = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert tail < 0.9 * head, losses


def test_rerun_is_noop(onpolicy_run, capsys):
    run, ov, first = onpolicy_run
    log = run / "train" / "onpolicy" / "ranks.log"
    size = log.stat().st_size
    capsys.readouterr()
    again = run_distill(ov)["train"]
    out = capsys.readouterr().out
    assert "train onpolicy: up to date" in out and again.key == first.key
    assert log.stat().st_size == size


@pytest.mark.slow
def test_kill_during_phase_resumes_and_starts_from_sft_weights(onpolicy_run, tmp_path):
    """lr 0: the phase's final weights must equal phase 1's, tensor for tensor, across a SIGKILL + resume."""
    src, ov, _ = onpolicy_run
    root = tmp_path / "r"
    shutil.copytree(src / "curate", root / "t" / "curate")
    shutil.copytree(src / "train" / "phase1", root / "t" / "train" / "phase1")  # up to date: not retrained
    ov = [o.replace(f"run.root={src.parent}", f"run.root={root}") for o in ov]
    # one epoch of shorter samples: 8 steps still put a checkpoint (step 2) between start and end
    short = {"stage.per_phase.onpolicy.epochs": "1", "stage.per_phase.onpolicy.max_new_tokens": "24"}
    ov = [f"{o.split('=')[0]}={short[o.split('=')[0]]}" if o.split("=")[0] in short else o for o in ov]
    ov += ["stage.per_phase.onpolicy.lr=0.0", "stage.save_steps=2"]
    op = root / "t" / "train" / "onpolicy"
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
    m = run_distill(ov)["train"].metrics["onpolicy"]
    assert m["resumed_from"] and 2 <= m["resume_step"] < m["global_step"] == m["max_steps"]
    assert "resuming from" in (op / "ranks.log").read_text()
    w1, w2 = weights(root / "t" / "train" / "phase1" / "final"), weights(op / "final")
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
