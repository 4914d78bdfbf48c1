"""A peer suite: the kinds of case Math-Verify's own tests pin down, in the shape curate sees them.

Math-Verify's tests compare a gold string with a whole model output. Curate compares a reference answer
with the answer its extraction takes from the response after `</think>` (the box), so the cases here are
those that fit that extraction: a bare reference, and a response that boxes its answer. The cases are
written for this suite (not copied), one per fact Math-Verify's tests state: thousands separators, decimal
commas, styling and units, fractions, radicals, relations, sets and intervals, matrices, choices,
percentages, several boxes. `MV` is the verdict math-verify gives on the whole response (checked here
too), `STRICT` what `verify.strict` gives where it differs (a documented false accept).
"""

from __future__ import annotations

import logging

import pytest

from distill.curate.answers import extract_answer
from distill.curate.verify import Verifier

logging.getLogger("math_verify").setLevel(logging.ERROR)

# (reference, response after </think>, math-verify's verdict, strict's verdict or None if the same)
PEER = [
    # numbers: signs, separators, decimals
    ("-7", "So the result is $\\boxed{-7}$.", True, None),
    ("3150000", "There are $\\boxed{3,150,000}$ ways.", True, None),
    ("3150000", "There are $\\boxed{3{,}150{,}000}$ ways.", True, None),
    ("2000", "The total is $\\boxed{2000.0}$.", True, None),
    ("0.7", "Hence $\\boxed{.7}$.", True, None),
    ("12.5", "It costs $\\boxed{12.50}$ dollars.", True, None),
    ("5", "We get $\\boxed{50}$.", False, None),
    ("11111111100", "is $\\boxed{11,\\!111,\\!111,\\!100}$", True, None),
    ("41349", "is $\\boxed{41,\\! 349}$", True, None),
    ("41349", "is $\\boxed{41, 349}$", False, None),  # a comma and a space: two numbers
    ("007", "The code is $\\boxed{007}$.", True, None),
    ("10^{20}", "$\\boxed{100000000000000000000}$", True, None),
    ("100000000000000000001", "$\\boxed{100000000000000000000}$", False, None),
    # fractions, notation, styling
    ("\\frac{11}{8}", "$\\boxed{11/8}$", True, None),
    ("-\\frac{11}{8}", "$\\boxed{-\\dfrac{11}{8}}$", True, None),
    ("\\frac{1}{4}", "$\\boxed{\\frac14}$", True, None),
    ("1", "$\\boxed{\\frac5{5}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{\\tfrac{2}{5}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{\\cfrac{2}{5}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{\\left( \\frac{2}{5} \\right)}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{\\frac{2}{5} \\text{ liters}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{\\frac{2}{5} \\textbf{ liters}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{p = \\frac{2}{5}}$", True, None),
    ("\\frac{2}{5}", "$\\boxed{0.4}$", True, None),
    ("\\frac{1}{6}", "$\\boxed{0.1666666666666667}$", True, None),
    ("\\frac{1}{6}", "$\\boxed{0.17}$", False, None),
    ("\\frac{5}{3}", "$\\boxed{\\frac{3}{5}}$", False, None),
    ("80", "The distance is $\\boxed{80\\textnormal{ km}}$.", True, None),
    ("80", "The distance is $\\boxed{80 \\mbox{ km}}$.", True, None),
    ("24", "$\\boxed{24^\\circ}$", True, None),
    ("24^\\circ", "$\\boxed{24}$", True, None),
    # radicals, pi, expressions
    ("4\\sqrt{3}", "$\\boxed{\\sqrt{48}}$", True, None),
    ("\\sqrt{3}", "$\\boxed{\\sqrt3}$", True, None),
    ("\\sqrt{3}+\\sqrt{7}", "$\\boxed{\\sqrt 7+\\sqrt 3}$", True, None),
    ("\\frac{7}{2}\\pi", "$\\boxed{\\frac72\\pi}$", True, None),
    ("3", "$\\boxed{3\\sqrt{2}}$", False, None),
    ("2", "$\\boxed{\\frac{1+\\sqrt{3}}{2}}$", False, None),
    ("\\frac{\\sqrt{6}}{3}", "$\\boxed{\\sqrt{\\frac{2}{3}}}$", True, None),
    ("3 - 3q", "Thus $y - q = \\boxed{3 - 3q}$.", True, None),
    ("\\frac{x+5}{3}", "$\\boxed{\\frac{x}{3}+\\frac{5}{3}}$", True, None),
    ("\\sec^2(t)", "$\\boxed{1 + \\tan^2(t)}$", True, None),
    ("2 \\cos a \\sin b", "$\\boxed{2 \\sin b \\cos a}$", True, None),
    ("y+2m+1", "$\\boxed{y+1}$", False, None),
    ("(a+3)(b+4)", "$\\boxed{(+3)(b+4)}$", False, None),
    ("1 \\pm \\sqrt{7}", "so $x = \\boxed{1 \\pm \\sqrt{7}}$.", True, None),
    ("4 \\pm 3 \\sqrt{2}", "$\\boxed{4 + 3\\sqrt{2}, 4 - 3\\sqrt{2}}$", True, None),
    ("\\{2\\pm\\sqrt{3},-1\\}", "$\\boxed{\\{2\\pm\\sqrt{3},-1\\}}$", True, None),
    # relations and equations
    ("x \\geq 4", "$\\boxed{x >= 4}$", True, None),
    ("x < 6", "$\\boxed{x \\lt 6}$", True, None),
    ("x \\leq 4", "$\\boxed{4 \\geq x}$", True, None),
    ("x > 4", "$\\boxed{x < 4}$", False, None),
    ("y < 2", "$\\boxed{-y > -2}$", True, None),
    ("y < 2", "$\\boxed{y > -2}$", False, None),
    ("x \\neq 8", "$\\boxed{x != 8}$", True, None),
    ("x = 9", "$\\boxed{x = 4+5 = 9}$", True, None),
    ("9", "$\\boxed{n = 9}$", True, None),
    ("m = 9", "$\\boxed{9}$", True, None),
    ("3x + 2z = 6", "$\\boxed{6}$", False, None),
    ("2x+6y-4=0", "$\\boxed{y=-\\frac{1}{3}x+\\frac{2}{3}}$", True, None),
    ("x^2/9 + y^2/4 = 1", "$\\boxed{x^2/36 + y^2/16 = 1/4}$", True, None),
    # sets, tuples, intervals
    ("[0,3)", "$\\boxed{[0,3)}$", True, None),
    ("[0,3)", "$\\boxed{(0,3]}$", False, None),
    ("(1,4)", "$\\boxed{[1,4)}$", False, None),
    ("\\{4, 5, 6\\}", "$\\boxed{\\{6, 5, 4\\}}$", True, None),
    ("-3, 2", "The roots are $\\boxed{-3, 2}$.", True, None),
    ("(2, 5)", "$\\boxed{\\{2, 5\\}}$", True, None),
    ("(5, 2)", "$\\boxed{\\{2, 5\\}}$", False, None),
    ("(8, 30, -2)", "so $(a, b, c) = \\boxed{(8, 30, -2)}$.", True, None),
    ("(2, \\frac{7}{2})", "$\\boxed{(2, 3.5)}$", True, None),
    ("(3, \\frac{\\pi}{4})", "In polar form $\\boxed{\\left( 3, \\frac{\\pi}{4} \\right)}$.", True, None),
    ("[-2, 0) \\cup (0, 5]", "$\\boxed{[-2, 0) \\cup (0, 5]}$", True, None),
    ("[-3, 4]", "Thus $k \\in \\boxed{[-3, 4]}$.", True, None),
    ("(1, 5) \\cup (5, 40)", "so $x \\in \\boxed{(1,5) \\cup (5,40)}$", True, None),
    # matrices
    (
        "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}",
        "$\\boxed{\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}}$",
        True,
        None,
    ),
    (
        "\\begin{pmatrix}2 & 3 \\\\ 4 & 5\\end{pmatrix}",
        "$\\boxed{\\begin{pmatrix}2 & 3 \\\\ 4 & 6\\end{pmatrix}}$",
        False,
        None,
    ),
    (
        "\\begin{bmatrix}0 & 0 \\\\ 0 & 0\\end{bmatrix}",
        "$\\boxed{\\begin{pmatrix}0 & 0 \\\\ 0 & 0\\end{pmatrix}}$",
        True,
        None,
    ),
    (
        "\\begin{pmatrix}\\frac{1}{2} \\\\ \\frac{3}{4}\\end{pmatrix}",
        "$\\boxed{\\begin{pmatrix}0.5 \\\\ 0.75\\end{pmatrix}}$",
        True,
        None,
    ),
    # choices and words
    ("\\text{D}", "$\\boxed{\\text{(D)}}$.", True, None),
    ("\\text{D}", "$\\boxed{D}$", True, None),
    ("\\text{Maria}", "so the fastest is $\\boxed{\\text{Maria}}$.", True, None),
    ("\\text{14}", "$\\boxed{14}$", True, None),
    # percentages
    ("35\\%", "a total loss of $\\boxed{35\\%}$.", True, None),
    ("35\\%", "$\\boxed{35}$", True, None),
    ("35\\%", "$\\boxed{35 percent}$", True, None),
    ("35", "$\\boxed{35\\%}$", False, None),  # see OFF_DIFFERS
    # precision and irrationals
    ("\\frac{1}{3}", "$\\boxed{0.333333}$", True, None),
    ("\\frac{1}{3}", "$\\boxed{0.3333}$", False, None),
    ("4", "$\\boxed{4\\sqrt{2}}$", False, None),
    ("\\sqrt{19}", "$\\boxed{4.358899}$", True, False),  # strict: a rounded decimal is not sqrt(19)
    ("4.358898943540674", "$\\boxed{\\sqrt{19}}$", True, None),  # a decimal reference accepts the exact value
    ("\\pi", "$\\boxed{3.141593}$", True, False),
    ("\\frac{1}{20!}", "$\\boxed{\\frac{1}{22!}}$", True, False),  # strict: tiny values compare relatively
    ("0.0000003", "$\\boxed{0.0000001}$", True, False),
    ("\\frac{1}{2048}", "$\\boxed{0.000488}$", True, False),
    ("\\frac{1}{9!}", "$\\boxed{\\frac{1}{362880}}$", True, None),
    ("\\frac{1}{9!}", "$\\boxed{\\frac{1}{10!}}$", False, None),
    # several boxes
    ("1, 2", "$\\boxed{1}\\boxed{2}$", True, None),
    ("1, 2", "The answers are $\\boxed{1}$ and $\\boxed{2}$.", True, None),
    ("5", "First $\\boxed{3}$, but checking again the count is $\\boxed{5}$.", True, None),
    ("6", "We found \\boxed{6}. So the final answer is $\\boxed{6}$", True, None),
]

# Where curate with strict off is not math-verify on the whole response: the box's content is parsed as
# inline math (`$35\\%$`), which drops the percent sign that math-verify's boxed pattern keeps. Strict's
# percent rule gives math-verify's answer back.
OFF_DIFFERS = {("35", "$\\boxed{35\\%}$"): True}


def _mv_whole(reference: str, response: str) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse(f"${reference}$"), parse(response)))


@pytest.fixture(scope="module")
def verdicts() -> dict[bool, list]:
    preds = [extract_answer(f"<think>\nx\n</think>\n\n{resp}").answer for _, resp, *_ in PEER]
    pairs = [(ref, p) for (ref, *_), p in zip(PEER, preds, strict=True)]
    return {s: Verifier(num_workers=0, strict=s).verdicts(pairs) for s in (False, True)}


def test_the_facts_are_math_verify_s():
    assert [_mv_whole(ref, resp) for ref, resp, *_ in PEER] == [mv for _, _, mv, _ in PEER]


def test_peer_suite_agrees_with_math_verify_strict_off(verdicts):
    got = verdicts[False]
    off = {(c[0], c[1]): v for c, v in zip(PEER, got, strict=True) if v is not c[2]}
    print(f"\npeer suite, strict off: {len(PEER) - len(off)}/{len(PEER)} agree with math-verify")
    assert off == OFF_DIFFERS


def test_peer_suite_strict_on_differs_only_on_documented_false_accepts(verdicts):
    want = [mv if st is None else st for _, _, mv, st in PEER]
    got = verdicts[True]
    same_as_mv = sum(v is c[2] for c, v in zip(PEER, got, strict=True))
    print(
        f"\npeer suite, strict on: {same_as_mv}/{len(PEER)} agree with math-verify; the rest are false accepts"
    )
    assert got == want
    assert sum(st is not None for *_, st in PEER) >= 5
