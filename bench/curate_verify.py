"""Verification throughput: the plain per-row math-verify loop vs the curate stage's verifier.

    .venv/bin/python bench/curate_verify.py [--samples 20000] [--per-problem 32] [--workers N]

Data is shaped like a teacher's output: many samples per problem, mostly right in varied notation, some
wrong, some junk, across integers, fractions, decimals, radicals, pi, sets, intervals, text wrappers, +-,
factorials, thousands separators, huge integers, and unparseable or missing references. Both paths get
the same (reference, prediction) strings; the plain loop runs in this process's main thread, one row at a
time (parse reference, parse prediction, verify, as open-r1 does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time

# Answer kinds by share of problems, roughly as in MATH-style sets (AIME: integers only).
KINDS = {
    "int": 55,
    "thou": 3,
    "big": 2,
    "frac": 10,
    "dec": 4,
    "sqrt": 7,
    "pi": 4,
    "expr": 4,
    "set": 2,
    "interval": 2,
    "text": 3,
    "pm": 2,
    "fact": 1,
    "bad_ref": 0.5,
    "no_ref": 0.5,
}


def _kind(rng: random.Random) -> tuple[str | None, list[str], list[str]]:
    """(reference, equivalent forms, wrong forms) of one random problem's answer."""
    a, b, c = rng.randint(2, 60), rng.randint(2, 9), rng.randint(1, 7)
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "int":
        return (
            str(a),
            [str(a), f"{a}.0", f"\\text{{{a}}}", f"{a} \\text{{ apples}}", f"x = {a}"],
            [
                str(a + 1),
                str(a - 1),
                str(-a),
            ],
        )
    if kind == "frac":
        q = b + 1 if a % (b + 1) == 0 else b + 2
        return (
            f"\\frac{{{a}}}{{{q}}}",
            [f"{a}/{q}", f"\\dfrac{{{a}}}{{{q}}}", f"{a / q:.6f}"],
            [
                f"\\frac{{{q}}}{{{a}}}",
                f"\\frac{{{a + 1}}}{{{q}}}",
            ],
        )
    if kind == "dec":
        v = a / 4
        return f"{v}", [f"{v}", f"\\frac{{{a}}}{{4}}", f"{v * 100:g}\\%"], [f"{v + 0.5}", f"{v / 10}"]
    if kind == "sqrt":
        return (
            f"{c}\\sqrt{{{b}}}",
            [f"\\sqrt{{{c * c * b}}}", f"{c} \\sqrt {b}", f"{c}\\cdot\\sqrt{{{b}}}"],
            [
                f"\\sqrt{{{c * b}}}",
                f"{c + 1}\\sqrt{{{b}}}",
            ],
        )
    if kind == "pi":
        return (
            f"{c}\\pi",
            [f"{c} \\pi", f"\\pi \\cdot {c}", f"{c * 3.14159265:.5f}"],
            [f"{c + 1}\\pi", str(c)],
        )
    if kind == "set":
        s = sorted(rng.sample(range(-9, 10), 3))
        j = ", ".join
        return (
            "\\{" + j(map(str, s)) + "\\}",
            ["\\{" + j(map(str, s[::-1])) + "\\}", j(map(str, s))],
            ["\\{" + j(map(str, s[:2])) + "\\}", f"({s[0]}, {s[2]})"],
        )
    if kind == "interval":
        return (
            f"[{-c}, {a})",
            [f"[{-c},{a})", f"[ -{c} , {a} )"],
            [f"({-c}, {a}]", f"[{-c}, {a}]", f"({-c}, {a})"],
        )
    if kind == "text":
        L = "ABCDE"[a % 5]
        return (
            f"\\text{{({L})}}",
            [L, f"({L})", f"\\textbf{{{L}}}", f"\\text{{{L}}}"],
            ["ABCDE"[(a + 1) % 5], "E"],
        )
    if kind == "pm":
        return f"\\pm {a}", [f"{a}, -{a}", f"-{a}, {a}", f"\\pm{a}"], [str(a), f"\\pm {a + 1}"]
    if kind == "fact":
        n = rng.randint(3, 8)
        import math

        return f"{n}!", [str(math.factorial(n)), f"{n}!"], [str(math.factorial(n - 1)), f"{n - 1}!"]
    if kind == "thou":
        v = a * 1000 + b
        return f"{v:,}", [str(v), f"{v:,}", f"{v}.00"], [str(v + 1000), f"{v // 1000}"]
    if kind == "big":
        v = 10**20 + a
        return str(v), [str(v)], [str(v + 1), str(v - a)]
    if kind == "expr":
        return f"x^{c} + {a}", [f"{a} + x^{c}", f"x^{{{c}}}+{a}"], [f"x^{c} - {a}", f"x^{c + 1} + {a}"]
    if kind == "bad_ref":
        return "???", [str(a)], [str(a + 1)]
    return None, [str(a)], [str(a + 1)]


JUNK = ["", "x", "\\frac{", "I don't know", "\\text{none}", "}{", "3 + ", "\\sqrt{-1}", "\\infty"]


def make_pairs(n_samples: int, per_problem: int = 32, seed: int = 0) -> list[tuple[str | None, str]]:
    """(reference, prediction) pairs. Per problem: accuracy 30-95%; right answers mostly in the reference's
    own notation (a teacher is consistent), 15% in other notations; wrong ones from a few values; 3% junk."""
    rng = random.Random(seed)
    pairs: list[tuple[str | None, str]] = []
    while len(pairs) < n_samples:
        ref, right, wrong = _kind(rng)
        acc = rng.uniform(0.3, 0.95)
        for _ in range(per_problem):
            r = rng.random()
            if r < 0.03:
                pred = rng.choice(JUNK)
            elif r < 0.03 + acc:
                pred = (ref or right[0]) if rng.random() < 0.85 else rng.choice(right)
            else:
                pred = rng.choice(wrong)
            pairs.append((ref, pred))
    return pairs[:n_samples]


def naive(pairs: list[tuple[str | None, str]]) -> list[bool | None]:
    from distill.curate.verify import naive_verdict

    return [naive_verdict(ref, pred) for ref, pred in pairs]


def _one(path: str, args: argparse.Namespace, out_file: str) -> None:
    """Runs one path in this (fresh) process and writes its time and verdicts; imports are not timed."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from distill.curate.verify import Verifier, mv_parse

    pairs = make_pairs(args.samples, args.per_problem, args.seed)
    mv_parse("1")  # import math-verify outside the timing (the cold ANTLR DFA stays cold)
    t0 = time.perf_counter()
    if path == "naive":
        verdicts, distinct = naive(pairs), None
    else:
        v = Verifier(num_workers=args.workers)
        verdicts, distinct = v.verdicts(pairs), v.distinct_pairs
    dt = time.perf_counter() - t0
    with open(out_file, "w") as f:
        json.dump({"seconds": dt, "verdicts": verdicts, "distinct_pairs": distinct}, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--per-problem", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["naive", "stage"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return _one(args.only, args, args.out)
    # Each path in a fresh process: neither inherits the other's warm parser state.
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for path in ("stage", "naive"):
            out = os.path.join(d, f"{path}.json")
            subprocess.run(
                [sys.executable, __file__, "--only", path, "--out", out, *sys.argv[1:]], check=True
            )
            with open(out) as f:
                res[path] = json.load(f)
    n = args.samples
    fast, slow = res["stage"]["verdicts"], res["naive"]["verdicts"]
    t_fast, t_naive = res["stage"]["seconds"], res["naive"]["seconds"]
    print(f"{n} samples, {args.per_problem} per problem, {args.workers} workers")
    print(
        f"stage verifier: {t_fast:8.2f} s  {n / t_fast:9.1f} samples/s  ({res['stage']['distinct_pairs']} distinct pairs)"
    )
    print(f"naive loop:     {t_naive:8.2f} s  {n / t_naive:9.1f} samples/s")
    same = sum(a == b for a, b in zip(slow, fast, strict=True))
    counts = {k: sum(x is k for x in fast) for k in (True, False, None)}
    print(f"speed-up: {t_naive / t_fast:.1f}x   verdict agreement: {same}/{n} ({100 * same / n:.2f}%)")
    print(f"verdicts: true={counts[True]} false={counts[False]} null={counts[None]}")
    if same != n:
        raise SystemExit("verdicts differ")


if __name__ == "__main__":
    main()
