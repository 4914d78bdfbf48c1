"""Answer extraction, verdicts across answer kinds (math-verify pitfalls included), fast == plain."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import subprocess
import sys

import pytest
from sympy import srepr

from conftest import REPO
from distill.verify import Verifier, extract_answer, fast_parse, mv_parse, naive_verdict

logging.getLogger("math_verify").setLevel(logging.ERROR)


def _bench():
    spec = importlib.util.spec_from_file_location("curate_verify", REPO / "bench" / "curate_verify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "completion,answer,problem",
    [
        ("<think>\nx\n</think>\n\nSo \\boxed{1} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", None),
        ("<think>\n\\boxed{9}\n</think>\n\nThe answer is \\boxed{\\{1, 2\\}}", "\\{1, 2\\}", None),
        ("<think>\n\\boxed{9}\n</think>\n\nNo box here.", None, "no_answer"),
        ("<think>\nnever closed \\boxed{3}", None, "bad_think"),
        ("no think at all \\boxed{3}", None, "bad_think"),
        ("<think>a</think><think>b</think> \\boxed{3}", None, "bad_think"),
        ("R1-style, no opening tag\n</think>\n\n\\boxed 7", "7", None),
        ("<think>\nx\n</think>\n\n\\fbox{x^{2}}", "x^{2}", None),
    ],
)
def test_extraction(completion, answer, problem):
    e = extract_answer(completion)
    assert (e.answer, e.problem) == (answer, problem)


def test_extraction_fallbacks_are_configurable():
    c = "<think>\nhm\n</think>\n\nThe answer is 42."
    assert extract_answer(c).problem == "no_answer"
    assert extract_answer(c, ["boxed", "answer_is"]).answer == "42"
    assert extract_answer("<think>\n</think>\nso 3 then 5", ["boxed", "last_number"]).answer == "5"


CASES = [
    ("42", "42", True),
    ("42", "42.0", True),
    ("42", "43", False),
    ("\\frac{3}{4}", "0.75", True),
    ("\\frac{3}{4}", "3/4", True),
    ("0.25", "\\frac{1}{4}", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("3\\pi", "3 \\pi", True),
    ("\\pi", "3.14159", False),  # pitfall: pi is not rounded to a decimal
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True),
    ("[0, 1)", "[0,1)", True),
    ("[0, 1)", "(0, 1]", False),
    ("\\text{(B)}", "B", True),
    ("\\pm 3", "3, -3", True),
    ("5!", "120", True),
    ("1,000", "1000", True),  # pitfall: thousands separator, not a set
    ("10\\%", "10", True),
    ("100000000000000000001", "100000000000000000002", False),  # pitfall: precision of huge integers
    ("x^2 + 1", "1 + x^2", True),
    ("???", "3", None),  # unparseable reference: null, never false
    (None, "3", None),  # no reference
    ("3", "\\frac{", None),  # unparseable prediction
]


@pytest.mark.parametrize("ref,pred,want", CASES)
def test_verdicts_across_answer_kinds(ref, pred, want):
    assert naive_verdict(ref, pred) is want


def test_fast_verifier_equals_plain_on_cases():
    pairs = [(r, p) for r, p, _ in CASES]
    assert Verifier(num_workers=0).verdicts(pairs) == [w for *_, w in CASES]


def test_integer_literal_parse_is_math_verify_s():
    rng = random.Random(0)
    lits = [str(i) for i in range(-300, 300)] + ["007", "-0", "000"]
    lits += [str(rng.randint(-(10**25), 10**25)) for _ in range(200)]
    for s in lits:
        fast = fast_parse(s)
        assert [srepr(x) if not isinstance(x, str) else x for x in fast] == [
            srepr(x) if not isinstance(x, str) else x for x in mv_parse(s)
        ], s


def test_fast_path_identical_to_plain_math_verify_on_a_generated_set():
    pairs = _bench().make_pairs(1500, per_problem=16, seed=7)
    plain = [naive_verdict(r, p) for r, p in pairs]
    v = Verifier(num_workers=2)
    fast = v.verdicts(pairs)
    assert fast == plain
    assert {True, False, None} <= set(plain)
    assert v.distinct_pairs < len(pairs) / 3


TWO_STAGE_CHECK = """
import json, logging, sys, sympy
sys.path.insert(0, "bench")
logging.getLogger("math_verify").setLevel(logging.ERROR)
from curate_verify import JUNK, make_pairs
from math_verify import parser
from distill import verify as V

texts = sorted({t for r, p in make_pairs(4000, 16, seed=11) for t in (r, p) if t} | set(JUNK) | set(V.WARM_LATEX))
def parse_all():
    parser.parse_latex_cached.cache_clear()
    return [[sympy.srepr(x) if not isinstance(x, str) else x for x in V.mv_parse(t)] for t in texts]
plain = parse_all()
V._two_stage_latex_parser()
from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
active = getattr(_Latex2Sympy.create_parser, "_distill_two_stage", False)
print(json.dumps({"n": len(texts), "same": parse_all() == plain, "active": active}))
"""


def test_two_stage_antlr_parse_gives_plain_ll_results():
    """SLL-then-LL parsing must not change one parse: checked in a fresh process (the patch is global)."""
    out = subprocess.run(
        [sys.executable, "-c", TWO_STAGE_CHECK], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["active"] and res["n"] > 500 and res["same"]
