"""math-verify's parse of a bare number literal, without its LaTeX parser.

A teacher's answers are mostly literals: integers, decimals, fractions. For these, math-verify (0.9)
returns a fixed shape, read off its code and checked by `tests/test_verify.py` against `mv_parse` on
thousands of generated literals of each kind (signs, leading and trailing zeros, 25-digit numbers,
reducible fractions):

- an integer `n` (ASCII digits, optional `-`): `[Integer(n), text]`;
- a decimal `d.d` (optional `-`): `[Float(text), text]` (latex2sympy builds `Float` from the literal's
  own digits, so its precision follows them; a minus is a negation), except `0.5`, which math-verify's
  normalisation rewrites to `\\frac{1}{2}` first;
- a fraction `\\frac{a}{b}` (also `\\dfrac`, `\\tfrac`, optional leading `-`) of integers without leading
  zeros: `[Rational(a, b), "\\frac{a}{b}"]` (the command normalised, the sign kept in front);
- `a/b` likewise: `[Rational(a, b), "\\frac{a}{b}"]`, a minus inside the numerator (`\\frac{-a}{b}`).

ANTLR's parse of one costs 0.3-10 ms; this costs microseconds. Anything else returns None and goes to
math-verify unchanged.
"""

from __future__ import annotations

import re

# ASCII digits only: `\d` also matches '５', '٥', '५', '𝟓', which math-verify does not parse as numbers.
INT = re.compile(r"-?[0-9]{1,40}")
_DEC = re.compile(r"(-?)([0-9]{1,40}\.[0-9]{1,40})")
_N = r"([1-9][0-9]{0,8})"  # no leading zero, no zero denominator, within the tested range
_FRAC = re.compile(rf"(-?)\\[dt]?frac\{{{_N}\}}\{{{_N}\}}")
_SLASH = re.compile(rf"(-?){_N}/{_N}")


def _match(text: str) -> tuple[str, re.Match] | None:
    """Which literal shape `text` is, and its match (None: not one `literal_parse` takes)."""
    if m := INT.fullmatch(text):
        return "int", m
    if (m := _DEC.fullmatch(text)) and text != "0.5":
        return "dec", m
    if m := _FRAC.fullmatch(text):
        return "frac", m
    if m := _SLASH.fullmatch(text):
        return "slash", m
    return None


def literal_parse(text: str) -> list | None:
    """`mv_parse(text)` for a number literal of the shapes above, else None."""
    import sympy

    if (found := _match(text)) is None:
        return None
    kind, m = found
    if kind == "int":
        return [sympy.Integer(int(text)), text]
    if kind == "dec":
        value = sympy.Float(m[2])
        return [-value if m[1] else value, text]
    number = sympy.Rational(int(m[1] + m[2]), int(m[3]))
    if kind == "frac":
        return [number, f"{m[1]}\\frac{{{m[2]}}}{{{m[3]}}}"]
    return [number, f"\\frac{{{m[1]}{m[2]}}}{{{m[3]}}}"]


def is_literal(text: str) -> bool:
    """Whether `literal_parse` takes `text` (without building it)."""
    return _match(text) is not None
