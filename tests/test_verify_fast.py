"""The verifier's replayed parses, shape pass and comparison memo give plain math-verify's verdicts."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys

import sympy as sp

from conftest import REPO
from distill.curate.mv_speedups import structure_key
from distill.curate.verify import Verifier, mv_parse, naive_verdict

logging.getLogger("math_verify").setLevel(logging.ERROR)


def _bench():
    spec = importlib.util.spec_from_file_location("curate_verify", REPO / "bench" / "curate_verify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Forms whose token types repeat with other numbers (what replay shares) and forms that need full LL.
HAND = [
    "x^2", "x^{2}", "x^3 + 5", "5 + x^3", "(x^5+43)", "(x^{5}+43)", "x = x^4 + 38", "x = 5\\sqrt{8}",
    "(17)", "((A))", "(\\{9, 3, -8\\})", "([ -7 , 37 ))", "1 < x < 2", "2 > x > 1", "x \\le 3", "x \\geq -1",
    "a = 1, b = 2", "y = 2x + 1", "\\frac{a}{b}", "\\frac{x+1}{x-1}", "\\sqrt[3]{27}", "\\log_2 8", "e^{i\\pi}",
    "\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}", "\\begin{pmatrix}5 & 6\\\\7 & 8\\end{pmatrix}",
    "x^4 + 38.", "21.", "\\text{\\frac{57}{4}}", "\\sin^2 x + \\cos^2 x", "|x - 3|", "3 \\times 10^{5}",
    "\\frac{", "}{", "3 + ", "\\left(", "x ==", "((1)", "\\{1, 2", "[1, 2", "1,,2",
]  # fmt: skip

REPLAY_CHECK = """
import json, logging, sys, sympy
sys.path.insert(0, "bench")
logging.getLogger("math_verify").setLevel(logging.ERROR)
from curate_verify import JUNK, make_pairs
from math_verify import parser
from distill.curate import verify as V, mv_speedups as M
texts = sorted({t for r, p in make_pairs(1000, 16, seed=13) for t in (r, p) if t} | set(JUNK) | set(HAND))
def parse_all():
    return [[(sympy.srepr(x), getattr(x, "_prec", None)) if not isinstance(x, str) else x for x in V.mv_parse(t)]
            for t in texts]
plain = parse_all()
for speed_up in M.ALL:
    speed_up()
first = parse_all()  # records each new token-type sequence, replays the rest
recorded, replayed = M.REPLAY_STATS["recorded"], M.REPLAY_STATS["replayed"]
parser.parse_latex_cached._distill_store.data.clear()
second = parse_all()  # every parse that succeeded before is now a replay
print(json.dumps({"n": len(texts), "first": first == plain, "second": second == plain, "recorded": recorded,
                  "replayed_first": replayed, "replayed_second": M.REPLAY_STATS["replayed"] - replayed,
                  "bad": [t for t, a, b, c in zip(texts, plain, first, second) if not a == b == c][:5]}))
"""


def test_replayed_parser_decisions_give_plain_math_verify_parses():
    """A parse replayed from another string's recorded decisions must be that string's own parse: checked
    against plain math-verify (no speed-ups) on the bench's forms, hand-written ones and broken ones."""
    code = f"HAND = {HAND!r}\n" + REPLAY_CHECK
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["first"] and res["second"], res["bad"]
    # most shapes repeat, so replay is exercised
    assert res["n"] > 300 and res["replayed_first"] > res["recorded"]
    assert res["replayed_second"] > res["n"] // 2


def test_structure_key_only_where_class_and_args_are_the_whole_expression():
    x = sp.Symbol("x", real=True)
    assert structure_key(sp.Rational(3, 7)) == "Rational(3, 7)"
    assert structure_key(sp.Float("0.5", 30)) != structure_key(sp.Float("0.5", 15))  # precision is in the key
    assert structure_key(sp.Float("0.1")) != structure_key(sp.Float("0.1000000000000001"))
    assert structure_key(x) != structure_key(sp.Symbol("x")) != structure_key(sp.Symbol("y"))  # assumptions
    assert structure_key(sp.Add(x, 2, evaluate=False)) != structure_key(sp.Add(2, x, evaluate=False))
    assert structure_key(sp.Mul(2, sp.Add(x, 1), evaluate=False)) != structure_key(sp.Add(sp.Mul(2, x), 1))
    assert structure_key(sp.Eq(x, 2, evaluate=False)) is not None
    assert structure_key(sp.Tuple(sp.FiniteSet(1, x), sp.Interval(0, 1))) is not None
    assert structure_key(sp.Interval(0, 1)) != structure_key(sp.Interval.open(0, 1))
    assert structure_key(sp.FiniteSet(1, x) + sp.Interval(0, 1)) is None  # a Union: not listed
    assert structure_key(sp.And(x < 2, x > 1)) is None  # math-verify reads _unsorted_args, not args
    assert structure_key(sp.Dummy("d") + 1) is None
    assert structure_key(sp.Function("f")(x)) is None
    assert structure_key(sp.Matrix([[1, 2]])) is None


def test_structure_key_is_as_fine_as_srepr_on_parsed_answers():
    """Equal keys only for expressions sympy's `srepr` also prints alike (the memo's correctness), on every
    expression the bench's answers and the hand forms parse to. The key is finer than `srepr` where `srepr`
    sorts an unevaluated Add's or Mul's terms (`\\pi \\cdot 2` and `2\\pi`): a memo miss, never a wrong hit."""
    strings = {p for _, p in _bench().make_pairs(4000, 16, 3)} | set(HAND)
    seen: dict[str, str] = {}
    by_srepr: dict[str, set[str]] = {}
    for text in sorted(strings):
        for e in mv_parse(text):
            if isinstance(e, str) or (key := structure_key(e)) is None:
                continue
            assert seen.setdefault(key, sp.srepr(e)) == sp.srepr(e), (text, key)
            by_srepr.setdefault(sp.srepr(e), set()).add(key)
    assert len(seen) > 500 and any(len(keys) > 1 for keys in by_srepr.values())


# Pairs where a careless memo or string rule would go wrong: one parse reached by many strings, strings
# that normalise alike, relations in both orders, floats of different precision, sets against tuples.
PITFALL_PAIRS = [
    ("42", "\\boxed{42}"), ("42", " 42 "), ("42", "42 \\text{ cm}"), ("42", "\\text{42}"), ("\\text{42}", "42"),
    ("\\text{42}", "\\text{42} "), ("1 < x < 2", "2 > x > 1"), ("1 < x < 2", "(1, 2)"), ("(1, 2)", "1 < x < 2"),
    ("x \\le 3", "3 \\ge x"), ("x = 3", "3"), ("3", "x = 3"), ("x = 3", "y = 3"), ("0.5", "\\frac{1}{2}"),
    ("0.1", "0.10000001"), ("0.1", "0.1000001"), ("\\frac{1}{3}", "0.333333"), ("\\frac{1}{3}", "0.33333"),
    ("\\{1, 2\\}", "(1, 2)"), ("(1, 2)", "\\{1, 2\\}"), ("[1, 2]", "\\{1, 2\\}"), ("A", "\\text{(A)}"),
    ("\\text{(A)}", "(A)"), ("x^2 + 1", "1 + x^{2}"), ("x^2 + 1", "x^2 + 1."), ("\\sqrt{2}", "1.414214"),
    ("50", "50\\%"), ("50\\%", "0.5"), ("\\pi", "3.141593"), ("\\infty", "\\infty"), ("-\\infty", "\\infty"),
    ("\\begin{pmatrix}1 & 2\\end{pmatrix}", "\\begin{pmatrix}1 & 2\\end{pmatrix}"),
    ("\\frac{1}{20!}", "\\frac{1}{21!}"), ("I don't know", "I don't know"), ("???", "???"), ("", "1"),
]  # fmt: skip


def test_fast_verifier_equals_plain_on_spread_answers_and_pitfalls():
    """The fork path (shape pass in the parent, replay, comparison memo), strict and not, against the plain
    loop on the bench's default answer mix and on pairs chosen to trip a memo."""
    pairs = _bench().make_pairs(320, per_problem=16, seed=21, mix="spread") + PITFALL_PAIRS
    pairs += [(p, r) for r, p in PITFALL_PAIRS]
    for strict in (False, True):
        plain = [naive_verdict(r, p, strict=strict) for r, p in pairs]
        v = Verifier(num_workers=2, strict=strict)
        assert v.verdicts(pairs) == plain
        assert {True, False, None} <= set(plain)
    assert Verifier(num_workers=0).verdicts(pairs) == [naive_verdict(r, p) for r, p in pairs]
