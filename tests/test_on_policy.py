"""The on_policy train phase (distill.train.on_policy): the loss against closed-form KL, the plan, the prompts,
the vocabulary check at config time, and the loss going down after a short SFT phase (a student still far
from the teacher). The toy recipe's third phase runs in the e2e toy run (tests/test_e2e_onpolicy.py: 2 CPU
ranks from phase 2's weights, rerun no-op, kill and resume); there the student is already within ~0.02
nats a token of the teacher, too close for its loss to fall measurably in 16 steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_train import fake_curate, student_dir

from conftest import TOY, run_distill

TEACHER = TOY / "teacher"
FAST = ["stage.max_length=256", "stage.per_device_batch_size=2", "stage.lr=3e-3", "stage.logging_steps=1"]
ONPOL = [
    "stage.phases=[phase1,onpolicy]",
    "stage.per_phase.phase1.epochs=1",
    "stage.per_phase.onpolicy.source=phase1",  # prompts: phase 1's curated problems
    "stage.per_phase.onpolicy.max_new_tokens=48",
    "stage.per_phase.onpolicy.per_device_batch_size=2",
    "stage.per_phase.onpolicy.epochs=2",
    "stage.per_phase.onpolicy.lr=2e-3",
    "wandb.enabled=false",
]


def overrides(root: Path, *extra: str) -> list[str]:
    return ["stage=train", f"run.root={root}", "run.name=t", f"teacher.path={TEACHER}", *FAST, *ONPOL, *extra]


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


def test_a_tokenizer_that_does_not_load_is_named_without_its_credentials(tmp_path):
    """The check runs before any phase; huggingface_hub's message repeats the path, secrets and all."""
    secret = "sk-PLANTED-vocab-0451"
    fake_curate(tmp_path / "t", rows_per_phase=8)
    with pytest.raises(
        ValueError, match="student tokenizer https://\\*\\*\\*@hub.example/m does not load"
    ) as e:
        run_distill(overrides(tmp_path, f"student.path=https://u:{secret}@hub.example/m"))
    assert secret not in str(e.value) and e.value.__cause__ is None and e.value.__suppress_context__


@pytest.fixture(scope="module")
def onpolicy_run(tmp_path_factory):
    """Phase 1 (one epoch of 32 problems) then 16 on-policy steps on 2 ranks."""
    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("onpolicy")
    fake_curate(root / "t", rows_per_phase=32)
    m = run_distill(overrides(root, f"student.path={student}"))["train"]
    return root / "t", m


def test_loss_goes_down(onpolicy_run):
    run, m = onpolicy_run
    assert m.metrics["onpolicy"]["global_step"] == 16 and m.metrics["onpolicy"]["world_size"] == 2
    hist = json.loads((run / "train" / "onpolicy" / "train_log.json").read_text())["log_history"]
    losses = [r["loss"] for r in hist if "loss" in r]
    assert len(losses) >= 12 and all(math.isfinite(x) for x in losses)
    head, tail = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert tail < 0.9 * head, losses
