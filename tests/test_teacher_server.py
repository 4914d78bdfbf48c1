"""The on-policy phase with its teacher behind a vLLM server (distill.train.teacher_server): the settings are
checked at config time; against a vLLM-shaped fake server (tests/logprob_server.py, checked against a real
vLLM 0.32 CPU server in the note of issue 16) the student's exact tokens are scored, the loss is the binary
KL on the sampled token that the module documents (a lower bound of the full-vocabulary reverse KL), and the
phase's trainer takes optimizer steps without loading the teacher.
"""

from __future__ import annotations

import math

import pytest
import torch
from logprob_server import LogprobServer
from omegaconf import OmegaConf
from test_train import fake_curate

from conftest import TOY, stage_config

SERVER = "stage.per_phase.onpolicy.teacher_server"


def train_cfg(*extra: str):
    return stage_config("train", ["stage=train", "stage.phases=[phase1,onpolicy]", *extra])


def test_server_settings_are_typed_checked_and_keyed_without_the_address():
    from distill.train.on_policy import keyed_spec, phase_spec
    from distill.train.teacher_server import TeacherServer

    g = train_cfg(f"{SERVER}.base_url=http://teacher:8000/v1").stage
    assert OmegaConf.get_type(g.per_phase.onpolicy.teacher_server) is TeacherServer
    spec = phase_spec(g, "onpolicy")
    assert spec["on_policy"]["teacher_server"] == {
        "base_url": "http://teacher:8000/v1",
        "top_k": 1,
        "add_tail": True,
    }
    moved = phase_spec(train_cfg(f"{SERVER}.base_url=http://elsewhere:9000").stage, "onpolicy")
    assert keyed_spec(spec) == keyed_spec(moved)  # a moved server resumes the phase
    local = phase_spec(train_cfg().stage, "onpolicy")
    assert "teacher_server" not in keyed_spec(local)["on_policy"]  # local-teacher keys as before the field
    assert keyed_spec(spec) != keyed_spec(local)
    bad = {
        f"{SERVER}.top_k=5": "top_k=5 with beta=1.0",  # TRL: beta > 0 scores the sampled token only
        "stage.per_phase.onpolicy.temperature=0.7": "temperature=0.7",  # vLLM's prompt log-probs are untempered
        f"{SERVER}.top_k=2": "base_url='\\?\\?\\?'",  # no address given
        f"{SERVER}.add_tail=false": "loss would be 0",  # beta 1, no tail: p = 1 on a one-token support
    }
    for override, match in bad.items():
        extra = [f"{SERVER}.base_url=http://t:1"] if "base_url" not in match else []
        with pytest.raises(ValueError, match=match):
            phase_spec(train_cfg(override, *extra).stage, "onpolicy")
    with pytest.raises(ValueError, match="Key 'bse_url' not in 'TeacherServer'"):
        train_cfg(f"{SERVER}.bse_url=http://t:1")
    spec = phase_spec(train_cfg(f"{SERVER}.base_url=http://t:1", f"{SERVER}.top_k=8",
                                "stage.per_phase.onpolicy.beta=0").stage, "onpolicy")  # fmt: skip
    assert spec["on_policy"]["teacher_server"]["top_k"] == 8  # forward KL over the teacher's top 8


@pytest.fixture(scope="module")
def server_trainer(tmp_path_factory):
    """The phase's trainer as a rank builds it from its plan, against the fake server; the process state
    is reset afterwards so that later tests build their own."""
    from accelerate.state import AcceleratorState, PartialState

    from distill.train.on_policy import build_trainer, resolve, write_prompts
    from distill.train.stage import default_hparams, worker_plan
    from distill.train.worker import init_distributed

    tmp = tmp_path_factory.mktemp("server")
    prompts = tmp / "prompts.jsonl"
    write_prompts(fake_curate(tmp / "run", rows_per_phase=4)["phase1"], prompts)
    fake = LogprobServer(TOY / "teacher")
    with fake as url:
        op = resolve({"max_new_tokens": 8, "teacher_server": {"base_url": f"{url}/v1"}}, "x")
        plan = worker_plan(
            phase="onpolicy", kind="on_policy", on_policy=op | {"teacher": "not-loaded"},
            init_model=TOY / "student", train_file=prompts, output_dir=tmp / "out",
            hparams=default_hparams(progress=False, epochs=1, per_device_batch_size=2, lr=3e-3, logging_steps=1),
        )  # fmt: skip
        init_distributed(plan)
        try:
            yield build_trainer(plan), fake
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
            PartialState._reset_state()


def batch(tok, texts: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Left-padded prompts, right-padded completions: the layout TRL's generation hands compute_loss."""
    pad = tok.pad_token_id
    p = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                 return_dict=False) for q, _ in texts]  # fmt: skip
    c = [tok.encode(a, add_special_tokens=False) for _, a in texts]
    lp, lc = max(map(len, p)), max(map(len, c))
    return {
        "prompt_ids": torch.tensor([[pad] * (lp - len(x)) + x for x in p]),
        "prompt_mask": torch.tensor([[0] * (lp - len(x)) + [1] * len(x) for x in p]),
        "completion_ids": torch.tensor([x + [pad] * (lc - len(x)) for x in c]),
        "completion_mask": torch.tensor([[1] * len(x) + [0] * (lc - len(x)) for x in c]),
    }


def test_loss_is_the_binary_kl_of_the_sampled_token(server_trainer):
    """What reaches the loss with beta 1, top_k 1: per completion token x, KL(Bern(p_s(x)) || Bern(p_t(x)))
    with p_t the teacher's own probability (computed here from the local teacher), averaged over tokens."""
    from transformers import AutoModelForCausalLM

    trainer, fake = server_trainer
    assert trainer.teacher_model is None  # nothing of the teacher is loaded on the rank
    b = batch(trainer.processing_class, [("What is 2 + 3?", "<think>\n2 + 3 = 5\n</think>\n\n\\boxed{5}"),
                                         ("What is 12 + 30 + 7?", "<think>\n12 + 30 = 42\n</think>\n\n\\boxed{9}")])  # fmt: skip
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, b).item()
        ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
        mask = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
        s = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits, -1)
        teacher = AutoModelForCausalLM.from_pretrained(TOY / "teacher", dtype=torch.float32).eval()
        t = [torch.log_softmax(teacher(torch.tensor([row[m.bool()].tolist()])).logits[0], -1)
             for row, m in zip(ids, mask, strict=True)]  # fmt: skip
    model.train()
    lp = b["prompt_ids"].shape[1]
    kls, full = [], []
    for i in range(2):
        n_pad, n_comp = int((b["prompt_mask"][i] == 0).sum()), int(b["completion_mask"][i].sum())
        for j in range(n_comp):
            pos = lp + j  # the token at pos is predicted from pos - 1
            x = int(ids[i, pos])
            ps, pt = s[i, pos - 1, x].exp().item(), t[i][pos - 1 - n_pad, x].exp().item()
            kls.append(ps * math.log(ps / pt) + (1 - ps) * math.log((1 - ps) / (1 - pt)))
            si, ti = s[i, pos - 1], t[i][pos - 1 - n_pad]
            full.append(float((si.exp() * (si - ti)).sum()))
    expected = sum(kls) / len(kls)
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert loss < sum(full) / len(full)  # coarse-graining: below the full-vocabulary reverse KL
    sent = fake.requests[-1]
    assert sent["prompt"] == [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]  # no padding
    assert sent["prompt_logprobs"] == 1 and sent["max_tokens"] == 1 and sent["model"] == "toy-teacher"


def test_phase_trains_against_the_server(server_trainer):
    trainer, fake = server_trainer
    before, asked = {k: v.clone() for k, v in trainer.model.state_dict().items()}, len(fake.requests)
    trainer.train()
    assert trainer.state.global_step == 2  # 4 prompts / batch 2, one epoch
    assert len(fake.requests) == asked + 2  # one scoring request per micro-batch
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses and all(math.isfinite(x) and x > 0 for x in losses)
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
