"""Strict verdicts (`verify.strict`): math-verify's verdict minus three classes of its false accepts.

Identity with math-verify keeps its false positives, and each one puts a wrong trace into training. Strict
mode can only turn a math-verify True into False (never the reverse), by these rules:

1. Relative tolerance. math-verify compares numbers to 6 decimal places (or with sympy's `chop`), an
   absolute tolerance, so any two small values are "equal": 1/20! = 1/21!, 0.0000001 = 0.0000002. Strict
   also requires the values to agree within a relative 1e-4 (at two points, for expressions with
   symbols), and two answers without decimals to be exactly equal where sympy can prove them different
   (x - 1/20! vs x - 1/21!). 1/3 = 0.333333 and 1/70 = 0.014286 still pass; 1/1024 = 0.000977 does not.
2. A decimal is not an exact irrational. math-verify accepts 1.414214 for sqrt(2), 3.141593 for pi:
   a truncated or rounded decimal. Strict rejects a plain decimal prediction against a reference that is
   an exact irrational (or non-real) number; the reverse (decimal reference, exact prediction) stands.
3. A percent sign is part of the answer. latex2sympy drops `\\%`, so 25% = 25 in math-verify. Strict
   rejects a prediction with a percent sign (`%`, `percent`, `pct`) against a reference without one: 25%
   of something is 0.25 of it, not 25. A reference with a percent sign still accepts the bare number
   (the question asked "what percent", and 25 answers it).

Rules 1 and 2 live in math-verify's numeric comparison (`grader.sympy_numeric_eq`, which sets, tuples,
intervals, relations and matrices reach element by element); rule 3 reads the answer strings, since the
parse has already lost the sign. The patch only acts inside `rules()`: with strict off, every call is
math-verify's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

REL_TOL = 1e-4  # the same bound below which `mv_settle.surely_unequal` leaves a pair to math-verify
_NOISE = 1e-20  # absolute floor for expressions with symbols, evaluated at float points (cancellation)
_PERCENT = re.compile(r"%|percent|\bpct\b", re.IGNORECASE)
_active = False


def percent_mismatch(reference: str, prediction: str) -> bool:
    """Rule 3: the prediction carries a percent sign that the reference does not."""
    return bool(_PERCENT.search(prediction)) and not _PERCENT.search(reference)


def _exact_irrational(x) -> bool:  # noqa: ANN001 (sympy Basic)
    import sympy as sp

    try:
        return (
            isinstance(x, sp.Expr)
            and not x.free_symbols
            and not x.has(sp.Float)
            and x.is_number
            and x.is_rational is False
            and x.is_finite is not False
        )
    except Exception:  # noqa: BLE001 (no evidence: math-verify's verdict stands)
        return False


def _close(a, b) -> bool:  # noqa: ANN001
    """Rule 1: values within REL_TOL (relative); anything that cannot be evaluated keeps the verdict."""
    import cmath

    import sympy as sp

    from distill.curate.mv_settle import sample_values

    if not (isinstance(a, sp.Expr) and isinstance(b, sp.Expr)):
        return True
    try:
        pairs = sample_values(a, b)
    except Exception:  # noqa: BLE001
        return True
    floor = _NOISE if (a.free_symbols or b.free_symbols) else 0.0
    for u, v in pairs or []:
        if not (cmath.isfinite(u) and cmath.isfinite(v)):
            continue
        if abs(u - v) > max(REL_TOL * max(abs(u), abs(v)), floor):
            return False
    return True


def numeric_ok(gold, pred) -> bool:  # noqa: ANN001 (sympy Basic or MatrixBase)
    """Rules 1 and 2, for a pair that math-verify's numeric comparison called equal."""
    import sympy as sp
    from math_verify.grader import get_pct_val
    from sympy.matrices import MatrixBase

    if isinstance(gold, MatrixBase) or isinstance(pred, MatrixBase):
        return True  # compared element by element, each through this rule
    # math-verify compares a parsed percentage by its number (9% = 9); rule 3 judges the sign itself
    gold, pred = _doit(get_pct_val(gold, gold)), _doit(get_pct_val(pred, pred))
    if isinstance(pred, sp.Float) and _exact_irrational(gold):
        return False
    if not (_has_float(gold) or _has_float(pred)) and _provably_different(gold, pred):
        return False  # exact answers: equal values only, however small (x - 1/20! vs x - 1/21!)
    return _close(gold, pred)


def _has_float(x) -> bool:  # noqa: ANN001
    import sympy as sp

    return isinstance(x, sp.Basic) and x.has(sp.Float)


def _provably_different(a, b) -> bool:  # noqa: ANN001
    import sympy as sp

    if not (isinstance(a, sp.Expr) and isinstance(b, sp.Expr)):
        return False
    try:
        return (a - b).is_zero is False
    except Exception:  # noqa: BLE001
        return False


def _doit(x):  # noqa: ANN001, ANN202
    try:
        return x.doit()
    except Exception:  # noqa: BLE001 (math-verify's safe_sympy_doit)
        return x


def install() -> None:
    """Wraps math-verify's numeric comparison once per process; a no-op wrapper outside `rules()`."""
    from math_verify import grader

    if getattr(grader.sympy_numeric_eq, "_distill_strict", False):
        return
    inner = grader.sympy_numeric_eq

    def sympy_numeric_eq(a, b, float_rounding, numeric_precision):  # noqa: ANN001, ANN202
        ok = inner(a, b, float_rounding, numeric_precision)
        return ok and (not _active or numeric_ok(a, b))

    sympy_numeric_eq._distill_strict = True  # type: ignore[attr-defined]
    grader.sympy_numeric_eq = sympy_numeric_eq


@contextmanager
def rules() -> Iterator[None]:
    """Strict rules 1 and 2 for math-verify calls in this block (one thread: math-verify's alarm needs it)."""
    global _active
    install()
    prev, _active = _active, True
    try:
        yield
    finally:
        _active = prev
