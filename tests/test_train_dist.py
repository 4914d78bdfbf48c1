"""Train stage on 2 CPU ranks through the real driver: ZeRO-2 curriculum, ZeRO-3 consolidation, W&B,
skip/no-op reruns, the world-size guard, and resume after a SIGKILL mid-phase.

DeepSpeed compiles its CPU comm op once per machine into TORCH_EXTENSIONS_DIR (distill.cluster.launch keeps it in
~/.cache/distill/torch_extensions); later runs start in seconds.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_train import fake_curate, student_dir, worker_plan

from conftest import REPO, distill_cmd, procs_with, run_distill, weights

SECRETS = {"OPENAI_API_KEY": "sk-distill-test-secret-0451", "HF_TOKEN": "hf_distilltestsecret0451"}
FAST = ["stage.max_length=256", "stage.per_device_batch_size=2", "stage.lr=3e-3", "stage.logging_steps=2",
        "stage.phases=[phase1,phase2]"]  # fmt: skip


def overrides(root: Path, student: Path, *extra: str) -> list[str]:
    return ["stage=train", f"run.root={root}", "run.name=t", f"student.path={student}", *FAST, *extra]


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def wandb_records(path: Path):
    """Protobuf records of an offline `.wandb` file (a leveldb-style log: 7-byte header, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = payload if kind in (1, 2) else buf + payload
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def check_losses(m: dict) -> None:
    assert m["world_size"] == 2 and m["max_steps"] == m["global_step"] > 0
    assert math.isfinite(m["first_loss"]) and math.isfinite(m["final_loss"])
    assert m["final_loss"] < m["first_loss"] - 0.5, (m["first_loss"], m["final_loss"])


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory):
    """Both phases under ZeRO-2; phase 2 at lr 0, so its final weights must equal what it started from."""
    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("train-z2")
    fake_curate(root / "t")
    old = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    try:
        ov = overrides(
            root, student, "stage.strategy=zero2", "stage.epochs=4", "stage.per_phase.phase2.lr=0.0"
        )
        ov += ["stage.per_phase.phase2.epochs=1"]
        t0 = time.perf_counter()
        done = run_distill(ov)
        print(f"zero2 two-phase run: {time.perf_counter() - t0:.1f}s")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return root / "t", student, ov, done["train"]


def test_zero2_curriculum_phase2_starts_from_phase1(zero2_run):
    run, student, _, m = zero2_run
    p1, p2 = run / "train" / "phase1", run / "train" / "phase2"
    check_losses(m.metrics["phase1"])
    assert m.metrics["phase2"]["world_size"] == 2
    assert m.outputs["model"]["path"] == str(p2 / "final")
    assert json.loads((p2 / "plan.json").read_text())["init_model"] == str(p1 / "final")
    w0, w1, w2 = weights(student), weights(p1 / "final"), weights(p2 / "final")
    assert w1.keys() == w2.keys() and set(w0) <= set(w1)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # phase 1 trained
    for k in w1:  # phase 2 (lr 0) starts from, and so ends at, phase 1's final weights
        assert torch.equal(w1[k], w2[k]), k
    p2m = json.loads((p2 / "manifest.json").read_text())
    p1m = json.loads((p1 / "manifest.json").read_text())
    assert {"name": "phase1", "key": p1m["key"]}.items() <= p2m["inputs"][-1].items()


def test_final_dirs_reload_with_chat_template(zero2_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = zero2_run[0]
    final = run / "train" / "phase1" / "final"
    model = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(final)
    assert "{% generation %}" in tok.chat_template.replace("{%- generation %}", "{% generation %}")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id


def test_wandb_offline_runs_have_loss_and_no_secret(zero2_run):
    run = zero2_run[0]
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3, files  # one W&B run per phase, and the driver's run of the train pictures
    names, losses = set(), []
    for f in files:
        for rec in wandb_records(f):
            if rec.WhichOneof("record_type") == "run":
                assert rec.run.run_group == "t" and rec.run.project == "distill"
                names.add(rec.run.display_name)
            if rec.WhichOneof("record_type") == "history":
                losses += [
                    float(i.value_json)
                    for i in rec.history.item
                    if (i.key or "/".join(i.nested_key)) == "train/loss"
                ]
    assert names == {"t-phase1", "t-phase2", "t-train-plots"}
    assert losses and all(math.isfinite(x) for x in losses)
    for f in [p for p in run.rglob("*") if p.is_file()]:
        blob = f.read_bytes()
        assert not any(s.encode() in blob for s in SECRETS.values()), f


def test_finished_run_is_noop_and_phase2_change_keeps_phase1(zero2_run, capsys):
    run, _, ov, first = zero2_run
    p1 = run / "train" / "phase1"
    before = {f: sha(f) for f in (p1 / "final").iterdir()} | {p1 / "manifest.json": sha(p1 / "manifest.json")}
    log_size = (p1 / "ranks.log").stat().st_size
    capsys.readouterr()
    again = run_distill(ov)["train"]
    out = capsys.readouterr().out
    assert "train phase1: up to date" in out and "train phase2: up to date" in out
    assert "train: up to date" in out and again.key == first.key and again.created == first.created
    assert (p1 / "ranks.log").stat().st_size == log_size  # no ranks were started
    # a phase-2 change retrains phase 2 only; phase 1's files stay byte-identical
    changed = run_distill([o for o in ov if "phase2.epochs" not in o] + ["stage.per_phase.phase2.epochs=2"])
    out = capsys.readouterr().out
    assert "train phase1: up to date" in out and "train phase2: up to date" not in out
    assert changed["train"].key != first.key
    assert {f: sha(f) for f in before} == before


def test_zero3_consolidated_and_reloaded(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("train-z3")
    fake_curate(root / "t")
    ov = overrides(root, student, "stage.strategy=zero3", "stage.epochs=4", "stage.phases=[phase1]")
    m = run_distill(ov + ["wandb.enabled=false"])["train"]
    check_losses(m.metrics["phase1"])
    final = Path(m.outputs["model"]["path"])
    model, info = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    w0, w1 = weights(student), weights(final)
    assert all(w1[k].shape == w0[k].shape for k in w0)  # gathered full tensors, not ZeRO-3 shards
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(ids).logits).all()


def test_world_size_mismatch_fails(tmp_path_factory):
    """Ranks that do not form the configured world (here: 1 process for a 2-rank plan) must fail."""
    from distill.cluster.launch import LaunchSpec, accelerate_command, launch_env, run_ranks

    root = tmp_path_factory.mktemp("train-ws")
    files = fake_curate(root, rows_per_phase=8)
    plan = worker_plan(student_dir(tmp_path_factory), files["phase1"], root / "out") | {"world_size": 2}
    (root / "plan.json").write_text(json.dumps(plan))
    spec = LaunchSpec(num_processes=1)
    cmd = accelerate_command(spec, "distill.train.worker", ["--config", str(root / "plan.json")])
    assert run_ranks(cmd, launch_env(spec), root / "ranks.log") != 0
    assert "world size mismatch: configured 2 ranks" in (root / "ranks.log").read_text()
    assert not (root / "out" / "final").exists()


@pytest.mark.slow
def test_kill_during_phase1_resumes_from_checkpoint(tmp_path_factory):
    student = student_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("train-kill")
    fake_curate(root / "t", rows_per_phase=160)
    ov = overrides(root, student, "stage.epochs=3", "stage.save_steps=4", "stage.phases=[phase1]")
    ov += ["stage.per_device_batch_size=1", "wandb.enabled=false"]
    p1 = root / "t" / "train" / "phase1"
    proc = subprocess.Popen(
        distill_cmd(*ov),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not list(p1.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, "phase 1 ended or stalled before a checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while procs_with(str(p1 / "plan.json")):  # the ranks die with their parent (PR_SET_PDEATHSIG)
        assert time.time() < deadline, "orphaned ranks survived the kill"
        time.sleep(0.2)
    assert not (p1 / "manifest.json").exists() and not (p1 / "final").exists()
    m = run_distill(ov)["train"].metrics["phase1"]
    assert m["resumed_from"] and m["resumed_from"].startswith("checkpoint-")
    assert 4 <= m["resume_step"] < m["global_step"] == m["max_steps"]
    assert "resuming from" in (p1 / "ranks.log").read_text()
    assert math.isfinite(m["final_loss"]) and m["final_loss"] < m["first_loss"]
