"""Every stage x experiment composes; unknown names fail with the list of valid ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_root, distill_cmd, hydra_ctx, stage_config
from distill.pipeline import STAGES, resolve_stage

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
STAGE_FILES = sorted(p.stem for p in (REPO / "conf" / "stage").glob("*.yaml"))


def test_stage_files_match_registered_stages():
    assert STAGE_FILES == sorted(STAGES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("stage", STAGE_FILES)
def test_every_stage_and_experiment_composes(stage, experiment):
    overrides = [f"stage={stage}", f"experiment={experiment}"]
    cfg = stage_config(stage, overrides)
    assert cfg.stage.name == stage
    assert OmegaConf.get_type(cfg.stage).__name__ == f"{stage.capitalize()}Config"
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_pipeline_names_are_valid_stages(experiment):
    with hydra_ctx():
        cfg = compose_root([f"experiment={experiment}"])
    assert cfg.pipeline and set(cfg.pipeline) <= set(STAGES)
    for name in cfg.stages or {}:
        assert name in STAGES, f"experiment {experiment} sets values for unknown stage {name}"


def test_layering_schema_yaml_experiment_cli():
    overrides = ["stage=generate", "stage.sampling.n=7", "stage.num_shards=3"]
    cfg = stage_config("generate", overrides)
    assert cfg.stage.sampling.n == 7  # CLI beats the experiment's n=4
    assert cfg.stage.engine.dtype == "float32"  # the experiment beats the stage yaml's auto
    assert cfg.stage.engine.kv_cache_gib == 1  # the schema default survives
    assert cfg.stage.num_shards == 3


def test_reasonlite_recipe_numbers():
    overrides = ["stage=generate", "experiment=reasonlite"]
    cfg = stage_config("generate", overrides)
    from distill.generate.passes import pass_samplings, samples_per_problem

    s = cfg.stage.sampling
    assert (s.temperature, s.top_p, s.max_tokens) == (0.8, 1.0, 30000)
    assert samples_per_problem(cfg.stage) == 32  # 16 medium-effort + 16 high-effort samples
    efforts = [(p.n, p.reasoning_effort) for p in pass_samplings(s, cfg.stage.passes)]
    assert efforts == [(16, "medium"), (16, "high")]
    curate = stage_config("curate", ["stage=curate", "experiment=reasonlite"]).stage
    assert [(p.name, list(p["values"])) for p in curate.phases] == [
        ("phase1", ["medium"]),
        ("phase2", ["high"]),
    ]
    assert curate.lengths.max_length == 32768
    assert cfg.teacher.path == "openai/gpt-oss-120b" and cfg.student.path == "Qwen/Qwen3-0.6B"


def test_wrong_type_names_the_key():
    overrides = ["stage=generate", "stage.sampling.n=lots"]
    with hydra_ctx(), pytest.raises(Exception, match="n"):
        resolve_stage(compose_root(overrides), "generate", overrides)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(distill_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_unknown_stage_lists_valid_names(tmp_path):
    out = _cli("stage=nope", f"run.root={tmp_path}", cwd=REPO)
    assert out.returncode != 0
    assert "stage/nope" in out.stderr and "generate" in out.stderr


def test_unknown_experiment_lists_valid_names(tmp_path):
    out = _cli("experiment=nope", f"run.root={tmp_path}", cwd=REPO)
    assert out.returncode != 0
    assert "experiment/nope" in out.stderr and "toy" in out.stderr and "reasonlite" in out.stderr


def test_unknown_stage_in_pipeline_lists_valid_names(tmp_path):
    out = _cli("pipeline=[generate,bogus]", f"run.root={tmp_path}", cwd=REPO)
    assert out.returncode != 0
    assert "bogus" in out.stderr and "valid stages: generate" in out.stderr
