"""The quiet console: third-party lines go to `<stage>/stage.log`, ours and the actionable ones to the console.

The stage's redirection works on file descriptor 2, so these tests run a child Python (pytest's own
capture would otherwise stand between the code and the real stderr).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import logging, os, subprocess, sys
    from types import SimpleNamespace
    from distill.core import logs
    logging.basicConfig(stream=sys.stdout, level=logging.INFO)  # a console handler on root, as Hydra sets one
    logs.setup(SimpleNamespace(level=sys.argv[2], actionable=logs.LogConfig().actionable))
    # a library with its own stderr handler and propagate=False, as vLLM and transformers configure theirs
    lib = logging.getLogger("vllm.engine")
    lib.addHandler(logging.StreamHandler(sys.stderr)); lib.propagate = False; lib.setLevel(logging.INFO)
    with logs.stage_log(sys.argv[1], "demo"):
        lib.info("VLLM-INFO-LINE engine started")
        logging.getLogger("httpx").info("HTTPX-INFO-LINE GET /v1/models 200")
        logging.getLogger("transformers.x").warning("TF-WARNING-LINE nothing to do")
        logging.getLogger("torch.cuda").warning("CUDA out of memory. Tried to allocate 2 GiB")
        logging.getLogger("distill.demo").info("OUR-INFO-LINE 3 of 3 done")
        os.write(2, b"RAW-FD2-LINE from C++\\n")
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('CHILD-STDERR-LINE\\\\n')"])
        import warnings; warnings.warn("PY-WARNING-LINE deprecated thing")
        print("OUR-STDOUT-LINE summary", flush=True)
        if len(sys.argv) > 3:
            raise ValueError("boom in demo")
    print("AFTER-STAGE-STDERR", file=sys.stderr)
    """
)
THIRD_PARTY = [
    "VLLM-INFO-LINE",
    "HTTPX-INFO-LINE",
    "TF-WARNING-LINE",
    "RAW-FD2-LINE",
    "CHILD-STDERR-LINE",
    "PY-WARNING-LINE",
]


def _run(tmp_path: Path, level: str, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    stage_dir = tmp_path / "run" / "demo"
    out = subprocess.run(
        [sys.executable, str(script), str(stage_dir), level, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    log = (stage_dir / "stage.log").read_text()
    return out, log


def test_third_party_lines_go_to_the_stage_log_not_the_console(tmp_path):
    out, log = _run(tmp_path, "info")
    assert out.returncode == 0, out.stderr
    console = out.stdout + out.stderr
    for line in THIRD_PARTY:
        assert line not in console, line
        assert line in log, line
    assert "OUR-INFO-LINE" in console and "OUR-STDOUT-LINE" in console
    assert "CUDA out of memory" in console  # a warning the user must act on
    assert "OUR-INFO-LINE" in log  # every record is kept, ours too
    assert "AFTER-STAGE-STDERR" in out.stderr  # stderr is the console's again after the stage


def test_verbose_restores_every_line_on_the_console(tmp_path):
    out, _ = _run(tmp_path, "debug")
    assert out.returncode == 0, out.stderr
    console = out.stdout + out.stderr
    for line in [*THIRD_PARTY, "OUR-INFO-LINE", "CUDA out of memory"]:
        assert line in console, line


def test_a_failure_names_the_log_that_holds_the_details(tmp_path):
    out, log = _run(tmp_path, "info", "fail")
    assert out.returncode != 0
    path = tmp_path / "run" / "demo" / "stage.log"
    assert f"demo failed: ValueError; details in {path}" in out.stderr
    assert "boom in demo" in out.stderr  # the error itself, in full (Python's traceback after the stage)
    assert "Traceback" in log and "boom in demo" in log


def test_rank_console_shows_our_progress_not_trl_dicts(capsys, monkeypatch):
    from distill.core import logs
    from distill.core.report import RankConsole, progress_line

    monkeypatch.setattr(logs._State, "level", "info")
    show = RankConsole()
    show(b"{'loss': '0.5', 'grad_norm': '1.2', 'learning_rate': '0.001', 'epoch': '0.1'}\n")
    show(b"[rank0]:[W1201 reducer.cpp:1529] Warning: find_unused_parameters=True was specified\n")
    show(b"[distill] train worker +5.1s: 2 ranks up\n")
    show((progress_line("train phase1", 40, 100, loss=0.4321, lr=1e-3, tok_s=9000) + "\n").encode())
    show.close()
    err = capsys.readouterr().err
    assert "'grad_norm'" not in err and "find_unused_parameters" not in err
    assert "[distill] train worker +5.1s: 2 ranks up" in err
    assert "train phase1" in err and "40/100" in err and "loss=0.4321" in err and "tok_s=9000" in err
    monkeypatch.setattr(logs._State, "level", "debug")
    RankConsole()(b"{'loss': '0.5'}\n")
    assert "{'loss': '0.5'}" in capsys.readouterr().err


def test_train_progress_lines_carry_step_loss_lr_and_tokens_per_s(capsys):
    from types import SimpleNamespace

    from distill.core.report import PROGRESS
    from distill.train.progress import ProgressLines

    cb = ProgressLines("phase2")
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=50)
    cb.on_train_begin(None, state, None)
    state.global_step = 5
    cb.on_log(None, state, None, logs={"loss": 1.5, "learning_rate": 2e-4, "num_tokens": 100.0})
    state.global_step = 10
    cb.on_log(None, state, None, logs={"loss": 1.25, "learning_rate": 1e-4, "num_tokens": 300.0})
    lines = [json.loads(x[len(PROGRESS) :]) for x in capsys.readouterr().out.splitlines()]
    assert [x["n"] for x in lines] == [0, 5, 10] and {x["total"] for x in lines} == {50}
    assert lines[2]["bar"] == "train phase2" and lines[2]["postfix"]["loss"] == 1.25
    assert lines[2]["postfix"]["lr"] == 1e-4 and lines[2]["postfix"]["tok_s"] > 0
    cb.on_log(
        None, SimpleNamespace(is_world_process_zero=False, global_step=1, max_steps=50), None, {"loss": 1}
    )
    assert capsys.readouterr().out == ""  # only rank 0 reports


def test_dash_v_is_log_level_debug_and_a_bad_level_is_refused():
    from types import SimpleNamespace

    from distill.__main__ import verbose_to_override
    from distill.core import logs

    assert verbose_to_override(["stage=eval", "-v"]) == ["stage=eval", "log.level=debug"]
    assert verbose_to_override(["stage=eval"]) == ["stage=eval"]
    with pytest.raises(ValueError, match="log.level='loud'"):
        logs.setup(SimpleNamespace(level="loud", actionable=[]))
