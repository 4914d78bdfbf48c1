"""Comparisons that math-verify can only call False, recognised without running its comparison.

`surely_unequal` (below) settles plain expressions by value; `surely_false`, from the two expressions'
types and exact values alone, settles exact numbers and the set comparisons that cost math-verify a sympy
set algebra call (`symmetric_difference`, 5-20 ms) to reach False, by following `math_verify.grader.sympy_expr_eq` and `sympy_compare_sets` (v0.9) case by case:

- two exact numbers (Integer, Rational) of different values: structural, numeric (exact `==`) and
  symbolic (`simplify(a - b)` is a non-zero rational) equality all fail;
- a finite set of two or more distinct exact numbers against a single expression (no set, tuple or
  relation): math-verify wraps the expression in a one-element set; a set of one element cannot equal a
  set of two distinct values, and the element-wise comparison needs equal sizes;
- a numeric interval (infinitely many points) against a single expression or a finite set of exact
  numbers: never equal as sets; its only other rule compares an *open* interval's endpoints with a
  two-element set, which is left to math-verify;
- two finite sets of exact numbers with different elements: set equality fails and, in the element-wise
  comparison (sizes equal, both sorted by value), some pair of distinct exact numbers fails.

Strict mode only turns Trues into False, so these hold there too. Anything else is left to math-verify.
"""

from __future__ import annotations

import cmath

from distill.curate.mv_speedups import last_by_identity


def _exact_set(x) -> bool:  # noqa: ANN001 (sympy Basic)
    import sympy as sp

    return isinstance(x, sp.FiniteSet) and len(x.args) > 0 and all(isinstance(e, sp.Rational) for e in x.args)


def _numeric_interval(x) -> bool:  # noqa: ANN001
    import sympy as sp

    return isinstance(x, sp.Interval) and x.start.is_number is True and x.end.is_number is True


def _scalar(x) -> bool:  # noqa: ANN001
    import sympy as sp

    return isinstance(x, sp.Expr)  # not a Set, Tuple, relation, boolean or matrix


def surely_false(g, p) -> bool:  # noqa: ANN001 (sympy Basic: gold, prediction)
    """True when math-verify's comparison of gold `g` with prediction `p` can only say False."""
    import sympy as sp

    if isinstance(g, sp.Rational) and isinstance(p, sp.Rational):
        return g != p
    if _exact_set(g) and _exact_set(p):
        return frozenset(g.args) != frozenset(p.args)
    for a, b in ((g, p), (p, g)):
        if _exact_set(a) and len(a.args) >= 2 and _scalar(b):
            return True
        if _numeric_interval(a) and _scalar(b):
            return True
        if _numeric_interval(a) and _exact_set(b):
            return not (a.is_open and len(b.args) == 2)
    return False


# ------------------------------------------------------------------------------ numeric disproof


def _plain(expr) -> bool:  # noqa: ANN001 (sympy Basic)
    """An expression made only of arithmetic, elementary functions, numbers and plain or real symbols."""
    import sympy as sp
    from sympy.core.numbers import ImaginaryUnit

    ok = (sp.Add, sp.Mul, sp.Pow, sp.Number, sp.NumberSymbol, ImaginaryUnit)
    ok += (sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.factorial, sp.Abs)
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Symbol):
            if not (node.is_real is True or node.assumptions0 in ({}, {"commutative": True})):
                return False
        elif not isinstance(node, ok):
            return False
        elif isinstance(node, sp.Number) and not node.is_finite:
            return False
    return True


_plain_gold = last_by_identity(_plain)


# Two points in general position for the symbols of a non-constant expression: a difference that is
# non-zero at both is not identically zero.
_POINTS = ((0.5772156649, 1.2020569032, 0.9159655942, 1.6180339887), (1.4142135624, 0.6931471806, 2.7182818285, 0.3183098862))  # fmt: skip


def _value(x, subs: dict | None = None) -> complex:  # noqa: ANN001 (sympy Basic)
    """x's value as a complex double: a number directly (`evalf(30)` of it rounds to the same double, within
    an ulp, far inside the 1e-4 the callers compare at), anything else through a 30-digit `evalf`."""
    import sympy as sp

    if isinstance(x, sp.Number):
        return complex(float(x))
    return complex(x.evalf(30, subs=subs))


_gold_value = last_by_identity(_value)  # a constant gold's value (a group's gold repeats)


def sample_values(g, p) -> list[tuple[complex, complex]] | None:  # noqa: ANN001
    symbols = sorted(g.free_symbols | p.free_symbols, key=str)
    if not symbols:
        return [(_gold_value(g), _value(p))]
    if len(symbols) > 16:
        return None
    out = []
    for point in _POINTS:
        subs = {s: point[i % len(point)] * (1 + i // len(point)) for i, s in enumerate(symbols)}
        out.append((_value(g, subs), _value(p, subs)))
    return out


def surely_unequal(g, p, timeout_s: int = 5) -> bool:  # noqa: ANN001 (sympy Basic)
    """True when math-verify's comparison of these two parsed expressions can only say False.

    Both must be plain expressions (no sets, tuples, relations, matrices, bare symbols, percentages,
    integrals or infinities: each of those has its own rule in `sympy_expr_eq`). For those, math-verify
    says True only through structural equality, numeric equality (exact, or after rounding floats to 6
    decimals) or `simplify(g - p)` being zero. Values that differ by more than 1e-4 relative (at two
    points, when there are symbols) rule out all three, since simplify keeps values. Anything else,
    including an evaluation that fails or runs out of time, is left to math-verify.
    """
    import sympy as sp

    if not (isinstance(g, sp.Expr) and isinstance(p, sp.Expr)):
        return False
    if isinstance(g, sp.Symbol) or isinstance(p, sp.Symbol) or not (_plain_gold(g) and _plain(p)):
        return False
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout

    try:
        pairs = timeout(timeout_seconds=timeout_s)(sample_values)(g, p)
    except (TimeoutException, Exception):  # noqa: BLE001 (no evidence: math-verify decides)
        return False
    if not pairs:
        return False
    for a, b in pairs:
        if not (cmath.isfinite(a) and cmath.isfinite(b)):
            return False
        if abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b)):
            return False
    return True
