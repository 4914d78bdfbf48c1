"""Issue 14: every output hashed, `python -m distill verify` re-hashes a run and walks its chain, keys are
recomputable, and the one scrubber keeps harmless keys and drops planted secrets wherever a config is written."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, run_distill, stage_config
from distill.core.lineage import verify
from distill.core.manifest import Manifest, config_key, key_of
from distill.core.secrets import scrub, secret_key

SECRET = "sk-PLANTED-0451"
PLANTED = [  # an Authorization header in extra_body and an API key inside a URL (the hf backend ignores both)
    f"+stage.engine.extra_body.headers.Authorization=Bearer {SECRET}",
    f"stage.engine.base_url=https://user:{SECRET}@api.example.com/v1",
]
GEN = [
    "stage=generate",
    "stage.engine.backend=hf",
    "stage.engine.hf_threads=1",
    "data.train.limit=4",
    "stage.sampling.n=2",
    "stage.progress=false",
    "wandb.enabled=false",
]


def test_scrubber_keeps_harmless_keys_and_drops_secrets():
    cfg = {
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "max_tokens": 160, "completion_tokens": 3,
        "max_new_tokens": 8, "api_key_env": "OPENAI_API_KEY", "tokenizer": "t", "eos_token_id": 2,
        "api_key": "sk-1", "hf_token": "hf_1", "token": "t1", "password": "p", "X-Api-Key": "k",
        "extra_body": {"headers": {"Authorization": f"Bearer {SECRET}", "X-Trace": "1"}},
        "base_url": f"https://user:{SECRET}@host:8000/v1", "args": ["--x", f"Bearer {SECRET}"],
    }  # fmt: skip
    found: list[str] = []
    out = scrub(cfg, found)
    assert SECRET not in json.dumps(out)
    assert {k: out[k] for k in ("eos_token", "pad_token", "max_tokens", "api_key_env", "eos_token_id")} == {
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "max_tokens": 160,
        "api_key_env": "OPENAI_API_KEY", "eos_token_id": 2,
    }  # fmt: skip
    assert out["extra_body"] == {"headers": {"X-Trace": "1"}}
    assert out["base_url"] == "https://***@host:8000/v1" and out["args"] == ["--x", "Bearer ***"]
    assert {"api_key", "hf_token", "token", "password", "X-Api-Key"} & set(out) == set()
    assert "extra_body.headers.Authorization" in found and "base_url" in found
    assert not any(secret_key(k) for k in ("completion_tokens", "prompt_tokens", "bos_token", "unk_token"))


def test_every_default_config_survives_the_scrubber():
    """No stage's own config has a key the scrubber would drop (train's eos/pad tokens once were)."""
    for stage in ("generate", "curate", "train", "eval", "export"):
        found: list[str] = []
        scrub(OmegaConf.to_container(stage_config(stage, []), resolve=True), found)
        assert found == [], (stage, found)


def test_keys_ignore_secrets_and_are_recomputable(tmp_path):
    a = config_key(
        {"stage": {"n": 2, "engine": {"extra_body": {"headers": {"Authorization": "Bearer x"}}}}}, ["i"]
    )
    b = config_key({"stage": {"n": 2, "engine": {"extra_body": {}}}}, ["i"])  # as if never given
    assert a == b and key_of(a.material) == a
    Manifest("s", a, {}).write(tmp_path)
    m = Manifest.read(tmp_path / "manifest.json")
    assert key_of(m.keyed) == m.key == a


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """generate (with planted secrets) and curate, for real: a small run to verify and to damage."""
    root = tmp_path_factory.mktemp("lineage")
    run_distill([*GEN, *PLANTED, f"run.root={root}"])
    run_distill(["stage=curate", f"run.root={root}", "stage.progress=false", "wandb.enabled=false"])
    return root / "toy"


def test_planted_secrets_reach_no_file_and_no_key(run, capsys):
    leaked = [p for p in run.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    man = json.loads((run / "generate" / "manifest.json").read_text())
    assert man["config"]["engine"]["base_url"] == "https://***@api.example.com/v1"
    clean = run_distill([*GEN, f"run.root={run.parent}"])["generate"]  # same key without the secrets
    assert clean.key == man["key"] and "up to date" in capsys.readouterr().out


def test_every_output_has_its_sha256(run):
    for label in ("generate", "curate"):
        man = json.loads((run / label / "manifest.json").read_text())
        # a file's digest, or a sharded dataset's per-shard digests (one for every shard it lists)
        for o in man["outputs"].values():
            want = {s["file"] for s in o.get("shards", [])}
            assert isinstance(o["sha256"], str) or (
                isinstance(o["sha256"], dict) and set(o["sha256"]) == want
            ), label
        assert man["outputs"], label


def _verify_cli(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(REPO / ".venv/bin/python", "-m", "distill", "verify"), f"run.root={run_dir.parent}", f"run.name={run_dir.name}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip


def test_verify_passes_then_catches_a_one_byte_edit_in_each_output_of_a_copy(run, tmp_path):
    copy = tmp_path / "copy" / "toy"
    shutil.copytree(run, copy)
    ok = _verify_cli(copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "curate" in ok.stdout and "  generate" in ok.stdout and "<- problems" in ok.stdout
    for rel in (
        "generate/parts/*/shard-*.parquet",
        "curate/parts/*/phase1/unit-*.parquet",
        "curate/parts/*/rejected/unit-*.parquet",
        "curate/funnel.json",
    ):
        f = next(copy.glob(rel))
        before = f.read_bytes()
        f.write_bytes(before[:-2] + bytes([before[-2] ^ 1]) + before[-1:])
        report, _ = verify(copy)
        assert any(f.name in p for ps in report.problems.values() for p in ps), (
            rel,
            report.problems,
        )
        f.write_bytes(before)
    assert verify(run)[0].problems == {}  # the edits were made in the copy, not the original


def test_verify_catches_an_edited_config_and_a_broken_chain(run, tmp_path):
    copy = tmp_path / "toy"
    shutil.copytree(run, copy)
    man_file = copy / "generate" / "manifest.json"
    man = json.loads(man_file.read_text())
    man["config"]["sampling"]["temperature"] = 0.1
    man_file.write_text(json.dumps(man))
    report, _ = verify(copy)
    assert any("config.sampling.temperature" in p for p in report.problems["generate"])
    man["keyed"]["config"]["stage"]["sampling"]["temperature"] = 0.1
    man_file.write_text(json.dumps(man))
    report, _ = verify(copy)
    assert any("is not the hash of its recorded config" in p for p in report.problems["generate"])
    assert _verify_cli(copy).returncode == 1


def test_planted_secrets_stay_out_of_the_slurm_stage_yaml(tmp_path, monkeypatch, capsys):
    import distill.cluster.slurm as slurm
    from distill.pipeline import load_resolved

    monkeypatch.setattr(slurm, "sbatch", lambda job: "100")
    run_distill(["cluster=slurm", f"run.root={tmp_path}", "stage=generate", *PLANTED])
    f = tmp_path / "toy" / "slurm" / "generate.yaml"
    assert SECRET not in f.read_text()
    written = load_resolved(f)  # still what the job reads, typed
    assert written.stage.engine.base_url == "https://***@api.example.com/v1"
    out = capsys.readouterr().out
    assert (
        "generate.yaml: left out secret-looking values" in out
        and "stage.engine.extra_body.headers.Authorization" in out
    )


def test_planted_secrets_stay_out_of_the_train_plan_and_wandb(tmp_path, monkeypatch):
    from test_tracking import wandb_logs
    from test_train import fake_curate

    import distill.train.stage as train
    from distill.core.config import DistillConfig
    from distill.core.paths import Paths
    from distill.core.tracking import log_stage_outputs

    fake_curate(tmp_path / "runs" / "t", rows_per_phase=2)

    def no_ranks(cfg, plan, out):
        raise RuntimeError("stopped before the ranks")

    monkeypatch.setattr(train, "_launch", no_ranks)
    with pytest.raises(RuntimeError, match="stopped before the ranks"):
        run_distill(["stage=train", f"run.root={tmp_path / 'runs'}", "run.name=t", "wandb.enabled=false", "stage.phases=[phase1]",
                     f"+student.hf_token={SECRET}", f"student.path=https://u:{SECRET}@hub.example/m"])  # fmt: skip
    plan = (tmp_path / "runs" / "t" / "train" / "phase1" / "plan.json").read_text()
    assert SECRET not in plan
    assert json.loads(plan)["eos_token"] == "<|im_end|>" and json.loads(plan)["pad_token"] == "<|endoftext|>"
    # W&B: a run's config and an artifact's metadata, through the same scrubber
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.structured(DistillConfig)
    paths = Paths.for_run(str(tmp_path), "w", tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    planted = {"engine": {"extra_body": {"headers": {"Authorization": f"Bearer {SECRET}"}}}, "eos_token": "e"}
    m = Manifest(
        "generate", "k-w", planted, inputs=[{"name": "p", "path": f"https://u:{SECRET}@h/x", "key": "p"}]
    )
    log_stage_outputs(cfg, paths, m, "dataset", {"d.jsonl": data})
    logs = wandb_logs(paths.run_dir / "wandb", 1, b"MANIFEST_MD5")
    assert not any(SECRET.encode() in b for b in logs) and b"eos_token" in logs[0]
