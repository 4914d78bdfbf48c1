"""Issue 19's numbers: hostile inputs through the verifier and through curate, and strict mode's changes.

    .venv/bin/python scripts/verify_report.py [--toy-samples runs/toy/generate] [--samples 20000]

1. Hostile inputs: (reference, prediction) pairs built to break parsers (huge numbers and towers, deep
   nesting, non-ASCII digits, lone surrogates, control characters, 100 kB junk). Each pair is verified
   alone in this process with curate's timeouts; the table gives pairs, verdicts returned, max seconds.
   The same answers, as an external trace file, go through `python -m distill stage=curate`: rows in,
   rows landed (kept + rejected).
2. Strict mode: verdicts that change with `strict` on a toy generate output and on the bench's data.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]


def hostile_answers() -> list[str]:
    digits = ["５", "-５", "１２３", "٥", "١٢", "५", "१०", "𝟓", "𝟙𝟚", "²", "½", "Ⅻ", "৩"]
    towers = [
        "10^{10^{10}}",
        "9^{9^{9^{9}}}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "100000!",
        "(10^{100})!",
        "10^{-10^{10}}",
    ]
    towers += ["\\frac{1}{10^{10^{10}}}", "e^{e^{e^{e^{10}}}}", "\\sqrt[10^{9}]{2}", "x^{x^{x^{x^{x}}}}"]
    big = ["9" * 5000, "1" + "0" * 20000, "-" + "7" * 999, "0." + "3" * 5000, "1e100000", "1,000" * 300]
    nesting = [
        "{" * 500 + "1" + "}" * 500,
        "(" * 300 + "1" + ")" * 300,
        "\\frac{" * 200,
        "\\sqrt{" * 200 + "2" + "}" * 200,
    ]
    nesting += ["\\left(" * 100 + "x" + "\\right)" * 100, "[" * 100, "\\{" * 100]
    junk = [
        "",
        " ",
        "\\",
        "$",
        "$$",
        "}{",
        "\\frac{",
        "3 + ",
        "\\boxed{",
        "nan",
        "zoo",
        "\\infty - \\infty",
        "0/0",
    ]
    junk += [
        "\\frac{1}{0}",
        "\x00",
        "1\x00",
        "\u202e12",
        "1\u200b2",
        "\ufeff3",
        "🙂",
        "3🙂",
        "\ud800",
        "1\udc80",
        "\udfff2",
    ]
    junk += ["a" * 100000, "\\frac{1}{2}" * 2000, "x+" * 3000 + "1", ", ".join(map(str, range(2000)))]
    junk += ["\\begin{pmatrix}" + "\\\\".join(" & ".join(["1"] * 30) for _ in range(30)) + "\\end{pmatrix}"]
    junk += [
        "\\int_0^{\\infty} e^{-x^2} dx",
        "\\sum_{n=1}^{\\infty} \\frac{1}{n^2}",
        "\\lim_{x\\to 0} \\frac{\\sin x}{x}",
    ]
    return digits + towers + big + nesting + junk


def hostile_pairs() -> list[tuple[str | None, str]]:
    answers = hostile_answers()
    normal = ["5", "\\frac{1}{2}", "\\sqrt{2}", "10"]
    pairs = [(a, n) for a in answers for n in normal[:2]] + [(n, a) for a in answers for n in normal[2:]]
    return pairs + [(a, a) for a in answers]


def _table_verifier(pairs: list, strict: bool) -> dict:
    from distill.curate.verify import Verifier

    worst, got, t_all = 0.0, 0, time.perf_counter()
    for pair in pairs:
        t0 = time.perf_counter()
        v = Verifier(num_workers=0, strict=strict).verdicts([pair])
        worst = max(worst, time.perf_counter() - t0)
        got += len(v)
    return {
        "pairs": len(pairs),
        "verdicts": got,
        "max_s_per_pair": round(worst, 2),
        "total_s": round(time.perf_counter() - t_all, 1),
    }


def _curate_rows(pairs: list, strict: bool, tmp: Path) -> dict:
    rows = []
    for i, (ref, pred) in enumerate(pairs):
        done = f"<think>\nwork {i}\n</think>\n\nThe answer is \\boxed{{{pred}}}."
        rows.append(
            {
                "id": f"h{i}",
                "question": f"Hostile problem number {i}: {i * 7919 % 10007}?",
                "gold": ref,
                "output": done,
            }
        )
    f = tmp / f"hostile-{strict}.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "heldout.jsonl").write_text(
        json.dumps({"id": "x", "problem": "nothing alike", "answer": "1"}) + "\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "stage=curate",
        f"run.root={tmp / 'runs'}",
        f"run.name=h{int(strict)}",
    ]
    cmd += [
        f"stage.input={f}",
        "stage.columns.problem_id=id",
        "stage.columns.problem=question",
        "stage.progress=false",
    ]
    cmd += [
        "stage.columns.answer=gold",
        "stage.columns.completion=output",
        f"stage.verify.strict={str(strict).lower()}",
    ]
    cmd += [
        f"data.heldout.path={tmp / 'heldout.jsonl'}",
        "stage.verify.num_workers=2",
        "stage.dedup.problems_near=false",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        return {"rows_in": len(rows), "rows_landed": 0, "error": out.stderr[-500:]}
    fun = json.loads((tmp / "runs" / f"h{int(strict)}" / "curate" / "funnel.json").read_text())
    return {
        "rows_in": len(rows),
        "rows_landed": fun["kept"] + fun["rejected"],
        "kept": fun["kept"],
        "s": round(time.perf_counter() - t0, 1),
    }


def _changes(pairs: list, workers: int) -> dict:
    from distill.curate.verify import Verifier

    off = Verifier(num_workers=workers).verdicts(pairs)
    on = Verifier(num_workers=workers, strict=True).verdicts(pairs)
    changed = [(p, a, b) for p, a, b in zip(pairs, off, on, strict=True) if a is not b]
    return {"pairs": len(pairs), "changed": len(changed), "examples": [list(p) for p, *_ in changed[:5]]}


def _toy_pairs(path: Path) -> list:
    from distill.core.manifest import Manifest
    from distill.core.shards import iter_dataset, read_any
    from distill.curate.answers import extract_answer

    if path.is_dir():  # a generate stage directory: its shards
        rows = iter_dataset(
            Manifest.read(path / "manifest.json").outputs["samples"], ["answer", "completion"]
        )
    else:
        rows = read_any(path)
    return [(r["answer"], extract_answer(r["completion"]).answer) for r in rows]


def main() -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--toy-samples", type=Path, help="a toy-world generate stage dir (or a .jsonl/.parquet of samples)"
    )
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    pairs = hostile_pairs()
    res: dict = {"hostile_answers": len(hostile_answers())}
    with tempfile.TemporaryDirectory() as d:
        for strict in (False, True):
            res[f"verifier strict={strict}"] = _table_verifier(pairs, strict)
            res[f"curate strict={strict}"] = _curate_rows(pairs, strict, Path(d))
    from curate_verify import make_pairs

    res["strict changes, bench data"] = _changes(make_pairs(args.samples, 32, 0), args.workers)
    if args.toy_samples:
        res["strict changes, toy"] = _changes(_toy_pairs(args.toy_samples), args.workers)
    print(json.dumps(res, indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
