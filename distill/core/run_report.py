"""`<run>/report.md` and `<run>/report.html`: what one run produced, on one page, written after its last stage.

Everything comes from the stages' manifests and the files they name (core imports no stage): what ran with
which config and code version, the curate funnel, the training curves, the eval table, the bundle and its
launch command, the router's cost table, and the lineage hashes. Both files are rendered from one list of
blocks; the HTML carries its pictures inline (base64) so it opens anywhere, the Markdown links them by
path relative to the run. Written again on every run, atomically.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from distill.core.config import STAGES
from distill.core.io import atomic_write_text
from distill.core.manifest import MANIFEST, Manifest
from distill.core.paths import Paths
from distill.core.plots import stage_pictures
from distill.core.secrets import scrub_override

log = logging.getLogger(__name__)
Block = tuple  # ("h2", text) ("p", text) ("table", header, rows) ("img", path, alt) ("code", text) ("details", summary, text)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _manifest(paths: Paths, stage: str) -> Manifest | None:
    p = paths.stage_dir(stage) / MANIFEST
    return Manifest.read(p) if p.exists() else None


def ran_section(ms: dict[str, Manifest | None], overrides: list[str] | None) -> list[Block]:
    rows = []
    for s, m in ms.items():
        if m is None:
            rows.append([s, "not run", "-", "-", "-", "-"])
            continue
        t = m.timings.get("total_s", m.timings.get("train_s"))
        rows.append([s, "done", m.key, m.created, m.versions.get("git", "-")[:12], _fmt(t)])
    out: list[Block] = [
        ("h2", "What ran"),
        ("table", ["stage", "status", "key", "finished", "code (git)", "seconds"], rows),
    ]
    if overrides is not None:
        shown = " ".join(scrub_override(o) for o in overrides)  # no key or credential in the report
        out.append(("p", f"Command line: `python -m distill {shown}`"))
    last = next((m for m in reversed(ms.values()) if m is not None), None)
    if last is not None:
        out.append(("p", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(last.versions.items()))))
    for s, m in ms.items():
        if m is not None:
            out.append(("details", f"{s} config", OmegaConf.to_yaml(OmegaConf.create(m.config))))
    return out


def funnel_section(m: Manifest | None) -> list[Block]:
    if m is None:
        return []
    f = m.metrics
    rows = [["input", "", _fmt(f["input"])]]
    rows += [[s["step"], f"-{s['removed']}", _fmt(s["remaining"])] for s in f["steps"] if s["removed"]]
    rows += [["kept", "", _fmt(f["kept"])]] + [[f"phase {k}", "", _fmt(v)] for k, v in f["phases"].items()]
    out: list[Block] = [("h2", "Curate funnel"), ("table", ["step", "removed", "samples"], rows)]
    out += [("img", Path(o["path"]), n) for n, o in m.outputs.items() if o["path"].endswith(".png")]
    return out


def train_section(m: Manifest | None, pictures: list[Path]) -> list[Block]:
    if m is None:
        return []
    cols = ["global_step", "first_loss", "final_loss", "tokens_per_s", "train_runtime_s", "world_size"]
    rows = [[phase, *(_fmt(v.get(c)) for c in cols)] for phase, v in m.metrics.items()]
    return [("h2", "Training"), ("table", ["phase", *cols], rows), *(("img", p, p.stem) for p in pictures)]


def eval_section(m: Manifest | None, pictures: list[Path]) -> list[Block]:
    if m is None:
        return []
    metrics = json.loads(Path(m.outputs["metrics"]["path"]).read_text())
    cols = ["avg@k", "pass@k", "cons@k", "mean_tokens", "truncation_rate", "problems"]
    rows = [
        [name, cat, *(_fmt(s[c]) for c in cols)]
        for name, by_cat in metrics["models"].items()
        for cat, s in by_cat.items()
    ]
    k, temp = metrics.get("k"), metrics.get("sampling", {}).get("temperature")
    return [
        ("h2", "Eval (held-out)"),
        ("p", f"k = {k} samples per problem at temperature {temp}."),
        ("table", ["model", "category", *cols], rows),
        *(("img", p, p.stem) for p in pictures),
    ]


def export_section(m: Manifest | None, pictures: list[Path] = ()) -> list[Block]:
    if m is None:
        return []
    spec = json.loads(Path(m.outputs["serve"]["path"]).read_text())
    doc = OmegaConf.to_container(OmegaConf.load(m.outputs["router"]["path"]))  # distill.router/v1
    costs = [
        [p, *(_fmt(c.get(k)) for k in ("cost_per_query", "accuracy", "cost_per_correct", "commodity_share"))]
        for p, c in doc["policy_costs"].items()
    ]
    cats = [
        [c, r["tier"], _fmt(r["student"]), _fmt(r["frontier"]), _fmt(r["gap"]), r.get("evidence", "")]
        for c, r in doc["routing"]["categories"].items()
    ]
    out: list[Block] = [
        ("h2", "Serving bundle"),
        ("p", f"Bundle: `{m.outputs['bundle']['path']}` (served as `{spec.get('served_model_name')}`)"),
        ("p", "Launch:"),
        ("code", spec["command"]),
        ("h2", "Router"),
        ("table", ["policy", "cost/query", "accuracy", "cost/correct", "commodity share"], costs),
        ("table", ["category", "tier", "student", "frontier", "gap", "evidence"], cats),
    ]
    out += [("img", p, p.stem.replace("_", " ")) for p in pictures]
    return out


def _digest(sha: str | dict | None) -> str:
    """A file's digest, shortened; a sharded dataset's count of per-shard digests."""
    return f"{len(sha)} shards" if isinstance(sha, dict) else (sha or "-")[:16]


def lineage_section(ms: dict[str, Manifest | None]) -> list[Block]:
    rows = []
    for s, m in ms.items():
        for i in m.inputs if m else []:
            rows.append([s, m.key, i.get("name", "-"), i.get("key", "-"), _digest(i.get("sha256"))])
    return [("h2", "Lineage"), ("table", ["stage", "stage key", "input", "input key", "sha256"], rows)]


def blocks(paths: Paths, cfg: Any = None, overrides: list[str] | None = None) -> list[Block]:
    ms = {s: _manifest(paths, s) for s in STAGES}
    pics = {s: stage_pictures(cfg, paths, s) if ms[s] else [] for s in ("train", "eval", "export")}
    name = paths.run_dir.name
    head: list[Block] = [
        ("h1", f"Run report: {name}"),
        ("p", f"Run directory `{paths.run_dir}`, written {time.strftime('%Y-%m-%d %H:%M:%S')}."),
    ]
    return [
        *head,
        *ran_section(ms, overrides),
        *funnel_section(ms["curate"]),
        *train_section(ms["train"], pics["train"]),
        *eval_section(ms["eval"], pics["eval"]),
        *export_section(ms["export"], pics["export"]),
        *lineage_section(ms),
    ]


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(bs: list[Block], run_dir: Path) -> str:
    out = []
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            out.append(
                "\n".join(
                    ["| " + " | ".join(map(_md_cell, r)) + " |" for r in [b[1], ["---"] * len(b[1]), *b[2]]]
                )
            )
        elif kind == "img":
            out.append(
                f"![{b[2]}]({Path(os.path.relpath(Path(b[1]).resolve(), run_dir.resolve())).as_posix()})"
            )
        elif kind == "code":
            out.append(f"```bash\n{b[1]}\n```")
        elif kind == "details":
            out.append(f"<details><summary>{b[1]}</summary>\n\n```yaml\n{b[2]}```\n\n</details>")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """`code` spans of a paragraph, the one inline markup the blocks use."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(bs: list[Block]) -> str:
    body = []
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in b[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}"></figure>'
            )
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        elif kind == "details":
            body.append(
                f"<details><summary>{html.escape(b[1])}</summary><pre>{html.escape(b[2])}</pre></details>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow:auto}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>distill run report</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(paths: Paths, cfg: Any = None, overrides: list[str] | None = None) -> Path:
    """`<run>/report.md` and `<run>/report.html` for whatever stages of the run have finished."""
    bs = blocks(paths, cfg, overrides)
    atomic_write_text(paths.run_dir / "report.html", to_html(bs))
    atomic_write_text(paths.run_dir / "report.md", to_markdown(bs, paths.run_dir))
    return paths.run_dir / "report.md"
