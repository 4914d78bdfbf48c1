"""Verification throughput: the plain per-row math-verify loop vs the curate stage's verifier, like for like.

    .venv/bin/python bench/curate_verify.py [--samples 20000] [--per-problem 32] [--workers N]
        [--baseline both|datasets|pool|serial] [--rounds 2] [--mix spread|reference]

Data is shaped like a teacher's output: many samples per problem, mostly right in varied notation (see
make_pairs for the mix), some wrong, some junk, across integers, fractions, decimals, radicals, pi, sets,
intervals, text wrappers, +-, factorials, thousands separators, huge integers, and unparseable or missing
references. Both paths get the same (reference, prediction) strings and the same number of processes
(`--workers`, default os.cpu_count()). The baseline is the plain loop (parse reference, parse prediction,
verify, one row at a time, as open-r1's reward does) spread over N processes, two ways, both measured by
default: as open-r1 and most users run a function over a data set, `datasets.Dataset.map(num_proc=N)` (the
issue's like-for-like baseline, which the RESULT line's `ratio` and PASS are about), and a stricter one of
ours, a fork pool that hands out 64-row chunks as workers free up (`pool_ratio`: no static split, no Arrow
round trip); `--baseline serial` is the first version's one-process loop. Each side runs `--rounds` times
in fresh processes, alternating, and its times are averaged. The last line printed is
`RESULT curate_verify ratio=...x goal>=10x baseline=datasets pool_ratio=...x ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time

# This checkout's `distill`, not whichever one the environment has installed (an editable install of
# another worktree would otherwise be what the stage side measures: the script's folder is bench/).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
            [f"{a}/{q}", f"\\dfrac{{{a}}}{{{q}}}", f"\\tfrac{{{a}}}{{{q}}}", f"{a / q:.6f}"]
            + ([f"\\frac{a}{q}"] if a < 10 and q < 10 else []),  # `\frac12`
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
UNITS = [" \\text{ cm}", "\\text{ units}", "^\\circ", " \\text{ dollars}"]


def dressed(form: str, rng: random.Random) -> str:
    """A right answer as teachers also box it: `x = ...`, a unit, `\\text{}`, a leftover `\\boxed{}`, spacing, a
    trailing period (each distinct string costs the stage its own parse and verify)."""
    return rng.choice(
        [
            f"x = {form}",
            form + rng.choice(UNITS),
            f"\\text{{{form}}}",
            f"\\boxed{{{form}}}",
            f" {form} ",
            f"{form}.",
            f"\\left({form}\\right)",
        ]
    )


def spread(ref: str | None, right: list[str]) -> list[str]:
    """The equivalent notations of a right answer, the reference's own among them, each listed once."""
    forms = ([ref] if ref else []) + right
    return list(dict.fromkeys(forms))


def make_pairs(
    n_samples: int, per_problem: int = 32, seed: int = 0, mix: str = "spread"
) -> list[tuple[str | None, str]]:
    """(reference, prediction) pairs. Per problem: accuracy 30-95%, 3% junk, the rest wrong.

    mix="spread" (default), a chosen spread, not a measured one (no public trace set we could find reports
    its answer-notation mix): the teacher favours one notation per problem, the reference's own in half
    the problems and another equivalent form in the other half, and writes it in 55% of its right
    answers; 30% are any equivalent form, 15% a dressed form (`x = ...`, a unit,
    `\\text{}`, a leftover `\\boxed{}`, spacing). Wrong answers: 60% one of a few typical mistakes, 40%
    another value near the answer. mix="reference" is the first version's mix (85% of right answers the
    exact reference string, wrong answers from a few values), kept to reproduce its numbers.
    """
    rng = random.Random(seed)
    pairs: list[tuple[str | None, str]] = []
    while len(pairs) < n_samples:
        ref, right, wrong = _kind(rng)
        acc = rng.uniform(0.3, 0.95)
        forms = spread(ref, right)
        favourite = forms[0] if rng.random() < 0.5 else rng.choice(forms[1:] or forms)
        for _ in range(per_problem):
            r = rng.random()
            if r < 0.03:
                pred = rng.choice(JUNK)
            elif r < 0.03 + acc and mix == "reference":
                pred = (ref or right[0]) if rng.random() < 0.85 else rng.choice(right)
            elif r < 0.03 + acc:
                u = rng.random()
                pred = (
                    favourite
                    if u < 0.55
                    else rng.choice(forms)
                    if u < 0.85
                    else dressed(rng.choice(forms), rng)
                )
            elif mix == "reference" or rng.random() < 0.6:
                pred = rng.choice(wrong)
            else:
                pred = near_miss(forms[0], rng)
            pairs.append((ref, pred))
    return pairs[:n_samples]


def near_miss(form: str, rng: random.Random) -> str:
    """A wrong answer that looks like the right one: one integer in it moved by a small amount (or, without
    an integer, a small integer)."""
    nums = list(re.finditer(r"\d+", form))
    if not nums:
        return str(rng.randint(0, 99))
    m = rng.choice(nums)
    v = int(m.group()) + rng.choice([-3, -2, -1, 1, 2, 3, 10])
    return form[: m.start()] + str(abs(v)) + form[m.end() :]


def naive(pairs: list[tuple[str | None, str]]) -> list[bool | None]:
    """The plain per-row loop (parse reference, parse prediction, verify), in this process."""
    from distill.curate.verify import naive_verdict

    return [naive_verdict(ref, pred) for ref, pred in pairs]


def naive_pool(pairs: list[tuple[str | None, str]], workers: int, chunk: int = 64) -> list[bool | None]:
    """The plain loop over `workers` forked processes, in chunks of `chunk` rows handed out as workers free
    up (an even load, unlike fixed shards): the same process count as the stage, nothing else of it."""
    import multiprocessing as mp

    chunks = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
        return [v for part in pool.imap(naive, chunks) for v in part]


def _verdict_row(row: dict) -> dict:
    from distill.curate.verify import naive_verdict

    return {"verdict": naive_verdict(row["ref"], row["pred"])}


def naive_datasets(pairs: list[tuple[str | None, str]], workers: int) -> list[bool | None]:
    """The plain loop as open-r1 runs its rewards over a data set: `datasets.Dataset.map(num_proc=N)`."""
    from datasets import Dataset, disable_caching

    disable_caching()
    ds = Dataset.from_dict({"ref": [r for r, _ in pairs], "pred": [p for _, p in pairs]})
    out = ds.map(_verdict_row, num_proc=workers if workers > 1 else None, desc="verify")
    return list(out["verdict"])


def _one(path: str, args: argparse.Namespace, out_file: str) -> None:
    """Runs one path (`stage` or a baseline's name) in this (fresh) process and writes its time and
    verdicts; imports are not timed."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from distill.curate import mv_speedups
    from distill.curate.verify import Verifier, mv_parse

    pairs = make_pairs(args.samples, args.per_problem, args.seed, args.mix)
    mv_parse("1")  # import math-verify outside the timing (the cold ANTLR DFA stays cold)
    mv_speedups.import_lazy_modules()  # and what sympy imports on its first `simplify`, for both sides
    if path == "datasets":
        import datasets  # noqa: F401  (its import is not timed either)
    t0 = time.perf_counter()
    distinct = None
    if path == "stage":
        v = Verifier(num_workers=args.workers)
        verdicts, distinct = v.verdicts(pairs), v.distinct_pairs
    elif path == "serial":
        verdicts = naive(pairs)
    elif path == "pool":
        verdicts = naive_pool(pairs, args.workers)
    else:
        verdicts = naive_datasets(pairs, args.workers)
    dt = time.perf_counter() - t0
    with open(out_file, "w") as f:
        json.dump({"seconds": dt, "verdicts": verdicts, "distinct_pairs": distinct}, f)


BASELINES = {
    "datasets": "plain loop, datasets.map(num_proc=N), as open-r1 runs a function over a data set",
    "pool": "plain loop, fork pool of N handing out 64-row chunks as workers free up (stricter)",
    "serial": "plain loop, 1 process (the first version's baseline)",
}


def _order(sides: list[str], rounds: int) -> list[str]:
    """Each round runs every side once, alternately forwards and backwards (stage, datasets, pool, pool,
    datasets, stage): a drift in the machine's speed weighs on every side alike."""
    return [x for r in range(rounds) for x in (sides if r % 2 == 0 else sides[::-1])]


def _measure(args: argparse.Namespace, sides: list[str]) -> dict[str, list[dict]]:
    """Each path in a fresh process: none inherits another's warm parser state."""
    res: dict[str, list[dict]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory() as d:
        for i, path in enumerate(_order(sides, args.rounds)):
            out = os.path.join(d, f"{i}.json")
            cmd = [sys.executable, __file__, "--only", path, "--out", out, *sys.argv[1:]]
            subprocess.run(cmd, check=True)
            with open(out) as f:
                res[path].append(json.load(f))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--per-problem", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes, both sides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--baseline", choices=[*BASELINES, "both"], default="both", help="both: datasets and pool"
    )
    ap.add_argument("--mix", choices=["spread", "reference"], default="spread", help="see make_pairs")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each side, times averaged (see _order)")
    ap.add_argument("--only", choices=["stage", *BASELINES], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return _one(args.only, args, args.out)
    baselines = ["datasets", "pool"] if args.baseline == "both" else [args.baseline]
    res = _measure(args, ["stage", *baselines])
    n = args.samples
    fast = res["stage"][0]["verdicts"]
    changed = any(r["verdicts"] != runs[0]["verdicts"] for runs in res.values() for r in runs)
    if changed:
        print("a side's verdicts changed between its runs")
    secs = {k: sum(r["seconds"] for r in v) / len(v) for k, v in res.items()}
    print(f"{n} samples, {args.per_problem} per problem, mix={args.mix}, {args.rounds} runs a side, "
          f"{args.workers} processes a side (serial: 1)")  # fmt: skip
    print(f"stage verifier: {secs['stage']:8.2f} s  {n / secs['stage']:9.1f} samples/s  "
          f"({res['stage'][0]['distinct_pairs']} distinct pairs)")  # fmt: skip
    ratios, same = {}, {}
    for b in baselines:
        ratios[b] = secs[b] / secs["stage"]
        same[b] = 0 if changed else sum(x == y for x, y in zip(res[b][0]["verdicts"], fast, strict=True))
        print(f"baseline {b:8s}: {secs[b]:8.2f} s  {n / secs[b]:9.1f} samples/s  speed-up {ratios[b]:.1f}x  "
              f"verdicts identical {same[b]}/{n}  ({BASELINES[b]})")  # fmt: skip
    counts = {k: sum(x is k for x in fast) for k in (True, False, None)}
    print(f"verdicts: true={counts[True]} false={counts[False]} null={counts[None]}")
    judged = baselines[0]  # the like-for-like baseline when both run: datasets.map(num_proc=N)
    agree = min(same.values())
    ok = ratios[judged] >= 10 and agree == n
    others = "".join(f" {b}_ratio={ratios[b]:.1f}x" for b in baselines[1:])
    print(f"RESULT curate_verify ratio={ratios[judged]:.1f}x goal>=10x baseline={judged}{others} "
          f"agreement={100 * agree / n:.2f}% goal=100% procs={args.workers} mix={args.mix} "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    if agree != n:  # after the RESULT line, which stays the last one printed
        sys.exit(1)


if __name__ == "__main__":
    main()
