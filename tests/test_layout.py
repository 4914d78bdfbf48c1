"""The package layout: one package per stage, core at the bottom, no import cycles, small modules.

Imports are read with `ast`, function-level ones included: a late import is still an edge of the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "distill"
STAGE_PKGS = ("generate", "curate", "train", "eval", "export")
# What each package may import besides itself and `core` (which every package may import).
ALLOWED = {
    "core": set(),
    "engines": set(),
    "cluster": {"pipeline"},  # the job runner calls a stage through the registry
    "generate": {"engines"},
    "curate": {"engines"},
    "train": {"engines", "cluster.launch"},  # ranks are started by the one launcher
    # eval scores with curate's verifier and extraction, so an eval verdict means what a curate verdict means
    "eval": {"engines", "curate.answers", "curate.verify", "curate.mv_speedups"},
    # the bundle's vLLM launch is made from the engine's own settings (llm_kwargs), as eval ran it
    "export": {"engines.base", "engines.vllm"},
}
TOP = {"__main__", "pipeline", "train_worker", "slurm_job", "__init__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from a import b` counts a.b when b is a module)."""
    files = {module_name(f): f for f in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{f}:{node.lineno}: relative import; the project uses absolute imports")
            else:
                continue
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (a package importing its own modules through
    its `__init__` is not a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            comp.append(v)
            if len(comp) > 1 and not all(c.startswith(min(comp)) for c in comp):
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        pkg = _package(mod)
        if pkg in TOP or pkg not in ALLOWED:
            continue
        for d in deps:
            dp, rest = _package(d), d.split(".", 1)[1]
            if dp in (pkg, "core") or any(rest == a or rest.startswith(a + ".") for a in ALLOWED[pkg]):
                continue
            bad.append(f"{mod} -> {d}")
    return sorted(bad)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_each_package_imports_only_what_the_layout_allows():
    assert layering_violations(import_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The checks themselves can fail: a planted cycle and a core module importing a stage are caught."""
    pkg = tmp_path / "distill"
    for sub in ("core", "curate", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "io.py").write_text("from distill.curate.stage import run\n")
    (pkg / "curate" / "stage.py").write_text("def run():\n    from distill.train.stage import x\n")
    (pkg / "train" / "stage.py").write_text("from distill.curate.stage import run\nx = 1\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        graph = import_graph(pkg)
    finally:
        REPO = saved
    assert cycles(graph) == [["distill.curate.stage", "distill.train.stage"]]
    assert "distill.core.io -> distill.curate.stage" in layering_violations(graph)
    assert "distill.train.stage -> distill.curate.stage" in layering_violations(graph)


def test_one_package_per_stage_with_config_and_run():
    from distill.pipeline import STAGE_MODULES, stage_module

    assert list(STAGE_MODULES) == list(STAGE_PKGS)
    for name in STAGE_PKGS:
        assert (PKG / name / "__init__.py").exists() and (REPO / "conf" / "stage" / f"{name}.yaml").exists()
        mod = stage_module(name)
        assert callable(mod.run) and isinstance(mod.Config, type), name


def test_modules_are_small_and_say_why_they_exist():
    """The package, and the scripts and benches beside it (the toy-world builder once grew to 666 lines)."""
    files = [*PKG.rglob("*.py"), *(REPO / "scripts").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    for f in sorted(files):
        text = f.read_text()
        assert len(text.splitlines()) <= 400, f"{f}: {len(text.splitlines())} lines > 400"
        assert ast.get_docstring(ast.parse(text)), f"{f}: no module docstring"


@pytest.mark.parametrize("alias", ["distill.train_worker", "distill.slurm_job"])
def test_old_entry_points_still_start(alias):
    """Jobs queued before the layout change call these modules: they must still parse their arguments."""
    out = subprocess.run([sys.executable, "-m", alias, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout or "node-launch" in out.stdout
