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


@pytest.mark.parametrize("prefix", ["stage.", "+stage.", "+stages.train."])
def test_new_phase_name_from_the_command_line(prefix, tmp_path):
    """A phase that no YAML names is set like any other (`stage.per_phase.phase2.lr` still works beside it),
    typed as the schema's PhaseOverride, read by the driver as an on_policy phase, and typed again when a
    Slurm job reads the resolved file back."""
    from distill.pipeline import load_resolved
    from distill.train.on_policy import phase_spec
    from distill.train.stage import PhaseOverride, phase_hparams

    new = [f"{prefix}per_phase.op2.{k}" for k in ("kind=on_policy", "source=phase2", "beta=0.5", "lr=3e-4")]
    overrides = ["stage=train", "stage.phases=[phase1,phase2,op2]", "stage.per_phase.phase2.lr=0.5", *new]
    cfg = stage_config("train", overrides)
    g = cfg.stage
    assert OmegaConf.get_type(g.per_phase.op2) is PhaseOverride
    assert g.per_phase.op2.temperature is None and g.per_phase.phase2.lr == 0.5
    spec = phase_spec(g, "op2")
    assert (spec["kind"], spec["source"], spec["on_policy"]["beta"]) == ("on_policy", "phase2", 0.5)
    assert phase_hparams(g, "op2")["lr"] == 3e-4 and phase_hparams(g, "phase1")["lr"] == g.lr
    OmegaConf.save(cfg, tmp_path / "train.yaml")
    back = load_resolved(tmp_path / "train.yaml").stage
    assert OmegaConf.get_type(back.per_phase.op2) is PhaseOverride and back.per_phase.op2.beta == 0.5


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("stage.per_phase.op2.kidn=on_policy", r"train\.per_phase\.op2: Key 'kidn' not in 'PhaseOverride'"),
        ("stage.per_phase.phase2.lrr=1", r"train\.per_phase\.phase2: Key 'lrr'"),
        ("+stage.per_phase.op2.lr=fast", r"train\.per_phase\.op2: Value 'fast'.*Float"),
        (
            "stage.per_phase.phse2.lr=1",
            r"train\.per_phase\.phse2: set on the command line, but 'phse2' is not",
        ),
    ],
)
def test_per_phase_typos_still_fail(override, match):
    with pytest.raises(ValueError, match=match):
        stage_config("train", ["stage=train", override])


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
