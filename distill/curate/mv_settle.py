"""Comparisons that math-verify can only call False, recognised from the two expressions' types alone.

`mv_speedups.surely_unequal` settles plain expressions by value; this settles exact numbers and the set
comparisons that cost math-verify a sympy set algebra call (`symmetric_difference`, 5-20 ms) to reach
False, by following `math_verify.grader.sympy_expr_eq` and `sympy_compare_sets` (v0.9) case by case:

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
