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
from distill.curate import mv_literals
from distill.curate.answers import extract_answer
from distill.curate.verify import Verifier, fast_parse, mv_parse, naive_verdict, parsed

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


def _literals(rng: random.Random) -> list[str]:
    """Integers, decimals and fractions of every sign, length and zero padding, and near-literals."""
    lits = [str(i) for i in range(-300, 300)] + ["007", "-0", "000"]
    lits += [str(rng.randint(-(10**25), 10**25)) for _ in range(200)]
    for _ in range(600):
        whole = rng.choice([str(rng.randint(0, 10 ** rng.randint(0, 25))), "0", "00", "007"])
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        lits.append(rng.choice(["", "-"]) + whole + "." + frac)
    lits += ["0.5", "-0.5", "0.50", "00.5", "0.0", "-0.0", "1.50", "12.5", "0.428571", "1." + "0" * 30 + "1"]
    for _ in range(300):
        a, b = (rng.choice([rng.randint(1, 99), rng.randint(1, 10**9 - 1)]) for _ in "ab")
        sign, cmd = rng.choice(["", "-"]), rng.choice(["frac", "dfrac", "tfrac"])
        lits += [f"{sign}\\{cmd}{{{a}}}{{{b}}}", f"{sign}{a}/{b}"]
    lits += [
        "\\frac{26}{2}",
        "-\\dfrac{65}{70}",
        "12/4",
        "-12/4",
        "1/1",
        "\\frac{0}{5}",
        "\\frac{5}{0}",
        "0/5",
        "5/0",
    ]
    lits += [
        "\\frac{07}{5}",
        "07/5",
        "\\frac{1234567890}{3}",
        "--3",
        "- 3/4",
        "3 / 4",
        "\\frac{-3}{4}",
        "3.",
        ".5",
    ]
    return lits


def _shape(parse: list) -> list:
    """What the literal test compares, in the JSON form `PLAIN_PARSE` prints."""
    return [
        [srepr(x), type(x).__name__, getattr(x, "_prec", None)] if not isinstance(x, str) else x
        for x in parse
    ]


# Plain math-verify in a fresh process (no speed-up patched in): the reference `mv_literals` is checked on.
PLAIN_PARSE = """
import json, logging, sys, sympy
logging.getLogger("math_verify").setLevel(logging.ERROR)
from distill.curate.verify import mv_parse
def shape(parse):
    return [[sympy.srepr(x), type(x).__name__, getattr(x, "_prec", None)] if not isinstance(x, str) else x
            for x in parse]
print(json.dumps([shape(mv_parse(t)) for t in json.load(sys.stdin)]))
"""


def test_number_literal_parse_is_math_verify_s():
    """`mv_literals` builds integers, decimals and fractions without math-verify: the same objects (class,
    structure, Float precision) and the same normalised string as plain math-verify, on thousands of
    literals; whatever it does not take goes to math-verify."""
    lits = _literals(random.Random(0))
    taken = [s for s in lits if mv_literals.literal_parse(s) is not None]
    assert len(taken) > 1500 and "0.5" not in taken and "\\frac{07}{5}" not in taken
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_PARSE], input=json.dumps(lits), cwd=REPO, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    plain = dict(zip(lits, json.loads(out.stdout), strict=True))
    for s in lits:
        assert _shape(fast_parse(s)) == plain[s], s
        assert mv_literals.is_literal(s) == (mv_literals.literal_parse(s) is not None), s


def test_fast_path_identical_to_plain_math_verify_on_a_generated_set():
    pairs = _bench().make_pairs(1500, per_problem=16, seed=7, mix="reference")
    plain = [naive_verdict(r, p) for r, p in pairs]
    v = Verifier(num_workers=2)
    fast = v.verdicts(pairs)
    assert fast == plain
    assert {True, False, None} <= set(plain)
    assert v.distinct_pairs < len(pairs) / 3


SPEEDUPS_CHECK = """
import json, logging, random, sys, sympy
sys.path.insert(0, "bench")
logging.getLogger("math_verify").setLevel(logging.ERROR)
from curate_verify import JUNK, make_pairs
from math_verify import parser
from distill.curate import verify as V

rng = random.Random(3)
numbers = ["0046", "1,234", "1,000,000", "12.50", "3.", ".5", "007.25", "-0.0", "2.5\\\\%", "1e5", "10^{20}"]
numbers += [f"{rng.randint(0, 10**rng.randint(1, 30))}" for _ in range(100)]
numbers += [f"{rng.randint(0, 999)}.{rng.randint(0, 10**rng.randint(1, 20))}" for _ in range(100)]
numbers += [f"\\\\frac{{{rng.randint(1, 99)}}}{{{rng.randint(1, 99)}}} + {rng.random():.6f}" for _ in range(50)]
texts = sorted({t for r, p in make_pairs(4000, 16, seed=11) for t in (r, p) if t} | set(JUNK) | set(V.WARM_LATEX))
texts += numbers
def parse_all():
    getattr(parser.parse_latex_cached, "cache_clear", lambda: None)()
    return [[(sympy.srepr(x), getattr(x, "_prec", None)) if not isinstance(x, str) else x for x in V.mv_parse(t)] for t in texts]
plain = parse_all()
for speed_up in V.mv_speedups.ALL:
    speed_up()
from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
active = [getattr(_Latex2Sympy.create_parser, "_distill_two_stage", False),
          getattr(_Latex2Sympy.parse_number, "_distill_memo", False),
          getattr(parser.parse_latex_cached, "_distill_memo", False),
          getattr(parser.extract_latex, "_distill_fast", False)]
print(json.dumps({"n": len(texts), "same": parse_all() == plain, "active": active}))
"""


def test_parse_speedups_give_plain_math_verify_results():
    """SLL-then-LL parsing and the number and LaTeX memos must not change one parse: checked in a fresh
    process (the patches are global), on the bench's answer kinds and on number literals of every shape."""
    out = subprocess.run(
        [sys.executable, "-c", SPEEDUPS_CHECK], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(res["active"]) and res["n"] > 700 and res["same"]


# Near misses and look-alikes, where a careless numeric disproof would be wrong: values equal after rounding,
# percentages, huge integers, identities that need simplify, symbols with assumptions. Every pair within a
# group is checked; across groups, a seeded sample.
PITFALL_GROUPS = [
    ["\\frac{1}{3}", "0.333333", "0.3333333", "0.33"],
    ["\\pi", "3.14159", "3.1415926536", "22/7"],
    ["10\\%", "10", "0.1"],
    ["100000000000000000001", "100000000000000000002", "1e20"],
    ["1.0000001", "1", "\\sin^2 x + \\cos^2 x", "e^{i\\pi}", "-1"],
    ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "0.7071068"],
    ["\\sqrt{x^2}", "x", "|x|", "2x", "x + y", "y + x"],
    ["2\\sqrt{3}", "\\sqrt{12}", "3.4641016"],
    ["i", "\\sqrt{-1}", "e^{i\\pi/2}"],
    ["x^2 - 1", "(x-1)(x+1)", "x^2 + 1"],
    ["\\log 8", "3\\log 2", "2.0794415"],
    ["5!", "120", "\\infty", "\\int_0^2 1 dx", "2"],
    ["I don't know", "\\text{none}", "\\frac{0}{0}", "0"],
    ["1e5", "100000", "10^{-7}", "2 \\times 10^{-7}", "0.0000001"],
]


def test_numeric_disproof_only_says_false_where_math_verify_does():
    from itertools import combinations, permutations

    from math_verify import verify

    from distill.curate.mv_settle import surely_unequal

    def exprs(texts):
        return [(t, x) for t in texts for x in mv_parse(t) if not isinstance(x, str)]

    pairs = [pq for g in PITFALL_GROUPS for pq in permutations(exprs(g), 2)]
    across = [pq for a, b in combinations(PITFALL_GROUPS, 2) for pq in zip(exprs(a), exprs(b), strict=False)]
    pairs += random.Random(0).sample(across, 60)
    decided = 0
    for (tg, g), (tp, p) in pairs:
        if surely_unequal(g, p):
            decided += 1
            assert verify([g], [p]) is False, (tg, tp)
    assert decided > len(pairs) // 3  # it does decide many of these (else this test checks nothing)


# ------------------------------------------------------------------ issue 19: digits, timeouts, memos, strict

NON_ASCII_DIGITS = [
    "５",
    "-５",
    "1５",
    "１２３",
    "٥",
    "١٢",
    "५",
    "१०",
    "𝟓",
    "𝟙𝟚",
    "৩",
    "๓",
    "²",
    "5²",
    "½",
    "Ⅻ",
]


def test_non_ascii_digits_parse_and_verify_as_math_verify_does():
    """`\\d` matched full-width, Arabic-Indic, Devanagari and mathematical digits; math-verify does not."""
    for s in NON_ASCII_DIGITS:
        assert [srepr(x) if not isinstance(x, str) else x for x in fast_parse(s)] == [
            srepr(x) if not isinstance(x, str) else x for x in mv_parse(s)
        ], s
    pairs = [(r, p) for s in NON_ASCII_DIGITS for r, p in ((s, "5"), ("5", s), (s, s), ("12", s))]
    assert Verifier(num_workers=0).verdicts(pairs) == [naive_verdict(r, p) for r, p in pairs]
    assert naive_verdict("5", "５") is None  # the fact the fast path used to get wrong (it said True)


def test_a_timed_out_parse_is_not_memoised(monkeypatch):
    from math_verify import parser
    from math_verify.errors import TimeoutException

    from distill.curate import verify as V

    real, calls = parser.extract_target_from_pred, []

    def slow_once(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutException("Operation timed out!")
        return real(*a, **kw)

    monkeypatch.setattr(parser, "extract_target_from_pred", slow_once)
    text = "\\frac{7}{13} + \\sqrt{71}"  # not parsed anywhere else in this process
    assert V.fast_parse(text) == []  # timed out: math-verify's [] ...
    assert parsed(V.fast_parse(text))  # ... not remembered: the next call parses
    assert len(calls) == 2 and parsed(V.fast_parse(text)) and len(calls) == 2  # a real parse is memoised


def test_memo_is_bounded_by_entries_and_by_memory():
    from distill.curate.mv_speedups import Memo

    m = Memo(max_entries=3, max_bytes=10**9)
    for k in "abcd":
        m.put(k, k)
    assert len(m) == 3 and m.get("a") is None and m.get("d") == "d"  # oldest out first
    m = Memo(max_entries=10**6, max_bytes=Memo.cost("x" * 1000) * 2)
    m.put("x" * 1000, 1)
    m.put("y" * 1000, 2)
    m.put("z" * 1000, 3)
    assert len(m) == 2 and m.get("x" * 1000) is None and m.bytes <= m.max_bytes
    m.put("w" * 10**6, 4)  # one entry larger than the whole budget is not kept (nor evicts the rest)
    assert m.get("w" * 10**6) is None and len(m) == 2


# Each strict class, on cases of our own: (reference, prediction, math-verify's verdict, strict verdict).
STRICT_CLASSES = {
    "tiny values, absolute tolerance": [
        ("\\frac{1}{20!}", "\\frac{1}{21!}", True, False),
        ("0.0000001", "0.0000002", True, False),
        ("\\frac{1}{1024}", "0.000977", True, False),
        ("\\{\\frac{1}{20!}, 1\\}", "\\{\\frac{1}{21!}, 1\\}", True, False),
        ("(\\frac{1}{20!}, 2)", "(\\frac{1}{21!}, 2)", True, False),
        ("x = \\frac{1}{20!}", "x = \\frac{1}{21!}", True, False),
        # still equal: exact equality, and decimals within the relative tolerance
        ("\\frac{1}{20!}", "\\frac{1}{2432902008176640000}", True, True),
        ("\\frac{1}{3}", "0.333333", True, True),
        ("\\frac{1}{70}", "0.014286", True, True),
        ("0.0000001", "10^{-7}", True, True),
        ("42", "42.0", True, True),
        ("0", "0.0", True, True),
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", True, True),
    ],
    "decimal for an irrational": [
        ("\\sqrt{2}", "1.414214", True, False),
        ("\\pi", "3.141593", True, False),
        ("2\\pi", "6.283185", True, False),
        ("e", "2.718282", True, False),
        ("\\{\\sqrt 2\\}", "\\{1.414214\\}", True, False),
        # still equal: exact forms, a decimal reference, a rational reference
        ("\\sqrt{2}", "\\frac{2}{\\sqrt{2}}", True, True),
        ("1.414214", "\\sqrt{2}", True, True),
        ("\\frac{3}{4}", "0.75", True, True),
        ("\\pi", "3.14", False, False),
    ],
    "percent sign as the bare number": [
        ("50", "50\\%", True, False),
        ("28", "28 percent", True, False),
        ("28", "28 pct", True, False),
        ("12.5", "12.5\\%", True, False),
        # still equal: a reference with the sign accepts the bare number and any spelling of the sign
        ("50\\%", "50", True, True),
        ("28\\%", "28 percent", True, True),
        ("10\\%", "10\\%", True, True),
        ("\\frac{1}{2}", "50\\%", False, False),
    ],
}
STRICT_CASES = [c for cases in STRICT_CLASSES.values() for c in cases]


@pytest.mark.parametrize("ref,pred,mv,strict", STRICT_CASES)
def test_strict_classes(ref, pred, mv, strict):
    assert naive_verdict(ref, pred) is mv  # the fact about math-verify this case is about
    assert naive_verdict(ref, pred, strict=True) is strict


def test_strict_fast_verifier_equals_strict_plain_and_off_is_math_verify():
    pairs = [(r, p) for r, p, *_ in STRICT_CASES]
    mv, strict = [c[2] for c in STRICT_CASES], [c[3] for c in STRICT_CASES]
    assert Verifier(num_workers=0, strict=True).verdicts(pairs) == strict
    assert Verifier(num_workers=0).verdicts(pairs) == mv
    assert Verifier(num_workers=2, strict=True).verdicts(pairs) == strict


def test_strict_only_removes_accepts_and_fast_equals_plain_on_a_generated_set():
    ours = [(r, p) for r, p, *_ in STRICT_CASES]
    pairs = _bench().make_pairs(600, per_problem=8, seed=5) + [(r, p) for r, p, _ in CASES] + ours
    plain = [naive_verdict(r, p) for r, p in pairs]
    strict = [naive_verdict(r, p, strict=True) for r, p in pairs]
    assert all(s is m or (m is True and s is False) for s, m in zip(strict, plain, strict=True))
    assert Verifier(num_workers=2, strict=True).verdicts(pairs) == strict
    changed = {pq for pq, s, m in zip(pairs, strict, plain, strict=True) if s is not m}
    assert changed == {(r, p) for r, p, mv, st in STRICT_CASES if mv is not st}  # the bench's data has none


@pytest.mark.parametrize(
    "response,boxed,box_prose,answer",
    [
        ("\\boxed{3} and \\boxed{5}", "joined", "find", "3, 5"),
        ("$\\boxed{3}$, $\\boxed{5}$", "joined", "find", "3, 5"),
        ("\\boxed{3}\\boxed{5}", "joined", "find", "3, 5"),
        ("\\boxed{3} or \\boxed{5}", "joined", "find", "3, 5"),
        ("\\boxed{3} \\text{ and } \\boxed{3}", "joined", "find", "3"),
        ("\\boxed{3} and \\boxed{5}", "last", "find", "5"),
        ("So \\boxed{1} then, checking, \\boxed{2}", "joined", "find", "2"),
        ("\\boxed{1}. Then \\boxed{2} and \\boxed{3}", "joined", "find", "2, 3"),
        ("\\boxed{\\boxed{4}}", "joined", "find", "4"),
        ("\\boxed{The answer is 5}", "joined", "find", "The answer is 5"),
        ("\\boxed{The answer is 5}", "joined", "whole", "\\boxed{The answer is 5}"),
        ("\\boxed{\\sqrt{2}}", "joined", "whole", "\\sqrt{2}"),
    ],
)
def test_box_rules(response, boxed, box_prose, answer):
    assert (
        extract_answer(f"<think>\nx\n</think>\n\n{response}", boxed=boxed, box_prose=box_prose).answer
        == answer
    )


def test_box_rules_give_math_verify_s_verdicts():
    """joined: a two-part answer verifies and a hedge does not; whole: a sentence in a box is no answer."""

    def verdict(ref, response, **kw):
        return naive_verdict(ref, extract_answer(f"</think>{response}", require_think=False, **kw).answer)

    assert verdict("3, 5", "\\boxed{3} and \\boxed{5}") is True
    assert verdict("3, 5", "\\boxed{3} and \\boxed{5}", boxed="last") is False
    assert verdict("5", "\\boxed{3} or \\boxed{5}") is False
    assert verdict("5", "\\boxed{3} or \\boxed{5}", boxed="last") is True
    assert verdict("5", "\\boxed{The answer is 5}") is True
    assert verdict("5", "\\boxed{The answer is 5}", box_prose="whole") is False
    assert verdict("3", "\\boxed{3 \\text{ apples}}", box_prose="whole") is True  # units are still dropped
    with pytest.raises(ValueError, match="boxed rule 'first'"):
        extract_answer("</think>\\boxed{1}", boxed="first")


def test_a_kept_pool_serves_every_call_with_the_same_verdicts():
    """Curate's sample pass verifies chunk after chunk on one pool (keep_pool): the pool is started once,
    reused, and each call's verdicts and unparsed references are that call's alone."""
    pairs = [(r, p) for r, p, _ in CASES]
    want = Verifier(num_workers=0).verdicts(pairs)
    v = Verifier(num_workers=2, keep_pool=True)
    try:
        assert v.verdicts(pairs[: len(pairs) // 2]) == want[: len(pairs) // 2]
        pool = v._pool
        assert pool is not None
        assert v.verdicts(pairs[len(pairs) // 2 :]) == want[len(pairs) // 2 :]
        assert v._pool is pool
        v.verdicts([("???", "1")])
        assert v.unparsed_references == {"???"}
        v.verdicts([("1", "1")])
        assert v.unparsed_references == set()
    finally:
        v.close()
    assert v._pool is None
    one_shot = Verifier(num_workers=2)
    assert one_shot.verdicts(pairs) == want and one_shot._pool is None
