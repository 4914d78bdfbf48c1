"""Decisions shared between worker processes, decimal literals and the one-scan `extract_latex` give plain
math-verify's parses."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import sympy as sp

from conftest import REPO
from distill.curate import decision_log
from distill.curate.decision_log import DecisionLog
from distill.curate.mv_extract import latex_groups

# Run in fresh processes (the patches are global). PRODUCE records and publishes every shape it meets;
# CONSUME, another process, parses other strings of the same shapes (other numbers) through the same log.
SHARE_CHECK = """
import json, logging, random, re, sys, sympy
sys.path.insert(0, "bench"); sys.path.insert(0, "tests")
logging.getLogger("math_verify").setLevel(logging.ERROR)
from curate_verify import JUNK, make_pairs
from test_verify_fast import HAND
from distill.curate import decision_log, verify as V, mv_speedups as M
role, path = sys.argv[1], sys.argv[2]
texts = sorted({t for r, p in make_pairs(1500, 16, seed=5) for t in (r, p) if t} | set(JUNK) | set(HAND))
if role == "consume":  # the same shapes, other numbers: `x^4 + 38` for `x^3 + 17`
    rng = random.Random(1)
    texts = sorted({re.sub(r"[1-9][0-9]*", lambda m: str(rng.randint(1, 99)), t) for t in texts})
def parse_all():
    return [[(sympy.srepr(x), getattr(x, "_prec", None)) if not isinstance(x, str) else x for x in V.mv_parse(t)]
            for t in texts]
plain = parse_all()
for speed_up in M.ALL:
    speed_up()
decision_log.share(decision_log.DecisionLog(path))
fast = parse_all()
print(json.dumps({"n": len(texts), "same": fast == plain, **M.REPLAY_STATS,
                  "bad": [t for t, a, b in zip(texts, plain, fast) if a != b][:5]}))
"""


def _run(role: str, path: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SHARE_CHECK, role, path], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_decisions_recorded_in_one_process_replay_in_another_as_plain_parses():
    """A recording read from the log must give the consuming process math-verify's own parse, and the
    consumer must actually replay it instead of recording the shape again."""
    log = DecisionLog.create()
    try:
        made = _run("produce", log.path)
        assert made["same"], made["bad"]
        assert made["recorded"] > 50
        used = _run("consume", log.path)
        assert used["same"], used["bad"]
        assert used["n"] > 300 and used["shared"] >= made["recorded"]
        assert used["recorded"] <= made["recorded"] // 10  # nearly every shape came from the log
        assert used["replayed"] > used["n"] // 2
    finally:
        log.remove()


def test_log_reads_only_whole_records_with_a_good_checksum(tmp_path):
    path = str(tmp_path / "d.log")
    open(path, "wb").close()
    a, b = DecisionLog(path), DecisionLog(path)
    a.publish("1.0 2.0", ((3, 1), (7, 2)))
    a.publish("5.0", None)
    assert b.pull() == [("1.0 2.0", ((3, 1), (7, 2))), ("5.0", None)]
    assert b.pull() == []  # read once
    with open(path, "ab") as f:  # a record still being written: a head and half its payload
        f.write(decision_log._HEAD.pack(100, 0) + b"x" * 50)
    assert b.pull() == []
    with open(path, "ab") as f:  # the rest of it, with a checksum that does not hold: skipped
        f.write(b"y" * 50)
    a.publish("9.0", ((1, 1),))
    assert b.pull() == [("9.0", ((1, 1),))]
    a.remove()
    assert DecisionLog(path).pull() == []  # gone: nothing to share, no error


def test_decimal_literals_are_sympy_number_s():
    """`memoise_number_literals` builds `Float(text)` for `digits.digits` instead of `sympy.Number(text)`
    (sympify, parse_expr): the same value and the same precision, leading zeros and long mantissas too."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    from distill.curate import mv_speedups

    mv_speedups.memoise_number_literals()
    rng = random.Random(7)
    texts = ["007.25", "0.0", "00.50", "12.50", "1.0000000000000000000001", "1,234.5", "3.", ".5", "1e5"]
    texts += [f"{rng.randint(0, 10 ** rng.randint(0, 25))}.{'0' * rng.randint(0, 4)}{rng.randint(0, 10 ** rng.randint(0, 25))}" for _ in range(2000)]  # fmt: skip
    for t in texts:
        want = sp.Number(t.replace(",", ""))
        got = _Latex2Sympy.parse_number(None, t)
        assert (type(got), got._mpf_ if got.is_Float else got, got._prec) == (
            type(want),
            want._mpf_ if want.is_Float else want,
            want._prec,
        ), t


def test_one_scan_latex_groups_pick_math_verify_s_groups():
    """The first non-empty group of each prefix in the dict's order, as math-verify's six scans pick them."""
    rx = re.compile(
        r"(?P<first_latex_a>a)?(?P<first_latex_b>b)?(?P<next1_latex_x>c)?(?P<next2_latexBoxed>d)?"
    )
    for s in ["", "a", "b", "ab", "bc", "abcd", "cd", "d"]:
        m = rx.match(s)
        gd = m.groupdict()

        def scan(prefix, gd=gd):
            return next(((v, n) for n, v in gd.items() if n.startswith(prefix) and v), None)

        want = [g for g in [scan("first_latex")] + [scan(f"next{i}_latex") for i in range(1, 6)] if g]
        assert latex_groups(m) == want, s


EXTRACT_CHECK = """
import json, logging, sys, sympy
sys.path.insert(0, "bench"); sys.path.insert(0, "tests")
logging.getLogger("math_verify").setLevel(logging.ERROR)
from curate_verify import JUNK, make_pairs
from test_verify_fast import HAND
from math_verify import parser
from math_verify.parser import LatexExtractionConfig, ExprExtractionConfig, get_extraction_regexes
from distill.curate import mv_speedups as M
for speed_up in M.ALL:
    speed_up()
fast, plain = parser.extract_latex, parser.extract_latex._distill_original
texts = sorted({t for r, p in make_pairs(3000, 16, seed=9) for t in (r, p) if t} | set(JUNK) | set(HAND))
texts += ["The answer is $\\\\boxed{5}$ and $6$", "$1$ and $2$ and $3$", "so $x = 3$, or $\\\\frac{1}{2}$",
          "\\\\boxed{12\\\\%}", "$50\\\\%$", "answer: $\\\\boxed{A}$, $\\\\boxed{B}$", "$[1, 2)$ \\\\text{ and } $(3, 4]$",
          "$50$\\\\%", "$25$%", "it is $3$ and $40$\\\\% of it", "$\\\\frac{1}{2}$ \\\\%"]
def show(r):
    e, s = r
    return [sympy.srepr(e) if isinstance(e, sympy.Basic) else repr(e), s]
n, pct, bad = 0, 0, []
cfg = (LatexExtractionConfig(), ExprExtractionConfig())
for text in texts:
    for pred in (f"${text}$", text):
        for patterns, target in get_extraction_regexes(cfg):
            if not isinstance(target, LatexExtractionConfig):
                continue
            for rx, _ in patterns:
                for m in rx.finditer(pred):
                    n += 1
                    pct += any(k.endswith("_percent") and v for k, v in m.groupdict().items())
                    if show(fast(m, target)) != show(plain(m, target)):
                        bad.append(pred)
print(json.dumps({"matches": n, "percent": pct, "bad": bad[:5]}))
"""


def test_one_scan_extract_latex_is_math_verify_s():
    """On every latex match of the bench's answers (bare and as inline math), hand-picked forms and
    multi-part, boxed and percent answers: the same expression and the same normalised string."""
    out = subprocess.run(
        [sys.executable, "-c", EXTRACT_CHECK], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["matches"] > 1000 and res["percent"] >= 4 and not res["bad"], res


SETTLE_FORMS = [
    "3", "-3", "4", "\\frac{1}{2}", "0.5", "2/4", "x", "x = 3", "\\pi", "\\sqrt{2}", "1 + x", "\\infty",
    "\\{1, 2\\}", "\\{2, 1\\}", "1, 2", "2, 1", "\\{1, 2, 3\\}", "1, 2, 3", "\\{3\\}", "\\{1, 1, 2\\}",
    "\\{\\frac{1}{2}, 1\\}", "\\{0.5, 1\\}", "\\{x, 1\\}", "(1, 2)", "[1, 2]", "[1, 2)", "(1, 2]", "(1, 3)",
    "(-\\infty, 2)", "[2, \\infty)", "(0.5, 1)", "(\\frac{1}{2}, 1)", "\\{-34, 34\\}", "\\pm 34", "34, -34",
    "(-6, 0)", "\\{-6, -1, 0\\}", "-6, -1, 0", "1 < x < 2", "\\emptyset", "\\text{(A)}", "A",
]  # fmt: skip


def test_settled_comparisons_are_math_verify_s_false():
    """Every pair `surely_false` settles is one math-verify (strict or not) calls False, on numbers, sets,
    intervals and look-alikes in both orders; and it settles the bench's costly kinds (sets, intervals)."""
    from math_verify import verify

    from distill.curate import strict
    from distill.curate.mv_settle import surely_false
    from distill.curate.verify import mv_parse

    items = [x for f in SETTLE_FORMS for x in mv_parse(f)[:1] if not isinstance(x, str)]
    settled, kinds = 0, set()
    for g in items:
        for p in items:
            if surely_false(g, p):
                settled += 1
                kinds.add((type(g).__name__, type(p).__name__))
                assert not verify([g], [p]), (g, p)
                with strict.rules():
                    assert not verify([g], [p]), (g, p)
    assert settled > 300
    assert {("FiniteSet", "Interval"), ("Interval", "Symbol"), ("FiniteSet", "Symbol")} <= kinds
