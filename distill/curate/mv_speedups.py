"""Speed-ups of math-verify that cannot change a verdict (verifier processes only).

Each one either caches a pure function, replays the LaTeX parser's own decisions for input of the same
token types, or decides a comparison that math-verify would decide the same way, by reasoning that
follows math-verify's own code (`math_verify.grader.sympy_expr_eq`, v0.9). The
patches are global, so they run in the verifier's worker processes (and a forking parent that warms them),
never at import. `tests/test_verify.py` checks each against plain math-verify on large generated sets.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable

from distill.curate import decision_log
from distill.curate.mv_extract import fast_extract_latex

MEMO_MAX = 200_000  # entries per memo (per process)
MEMO_MAX_BYTES = 256 << 20  # estimated bytes per memo (per process): long answers cost more than short ones
REPLAY_STATS = {"recorded": 0, "replayed": 0, "shared": 0}  # parser decisions (this process): tests, profiles
_LOG = decision_log.ACTIVE  # [the DecisionLog this process shares its recorded decisions through, or None]


class Memo:
    """A dict bounded by entries and by estimated memory, oldest entries evicted first.

    Memos hold pure functions' results, so evicting one only costs a recomputation. An entry's cost is
    estimated from its key: a parsed expression grows with its text (about 100 bytes of sympy tree per
    character, measured on answers up to 1,000 characters), so one 100 kB junk answer costs as much as
    thousands of short ones, and a key larger than the whole budget is not stored at all.
    """

    def __init__(self, max_entries: int = MEMO_MAX, max_bytes: int = MEMO_MAX_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.data: dict[str, object] = {}
        self.bytes = 0

    @staticmethod
    def cost(key: str) -> int:
        return 256 + 100 * len(key)

    def get(self, key: str):  # noqa: ANN201 (whatever was stored)
        return self.data.get(key)

    def put(self, key: str, value: object) -> None:
        c = self.cost(key)
        if c > self.max_bytes or self.max_entries <= 0 or key in self.data:
            return
        while self.data and (len(self.data) >= self.max_entries or self.bytes + c > self.max_bytes):
            oldest = next(iter(self.data))
            del self.data[oldest]
            self.bytes -= self.cost(oldest)
        self.data[key] = value
        self.bytes += c

    def __len__(self) -> int:
        return len(self.data)


def memoise_latex_parser() -> None:
    """math-verify's LaTeX->sympy step behind a large memo (`Memo`), failures included.

    math-verify keeps the last 20 results of this pure function (enough within one problem, not across
    problems, and never for inputs that fail to parse); a larger memo changes no output. Timeouts are not
    memoised (they depend on the clock, and the plain loop would retry them).
    """
    from math_verify import parser
    from math_verify.errors import TimeoutException

    inner = getattr(parser.parse_latex_cached, "__wrapped__", None)
    if inner is None or getattr(parser.parse_latex_cached, "_distill_memo", False):
        return
    memo = Memo()

    def parse_latex_memo(latex: str):
        if (hit := memo.get(latex)) is None:
            try:
                hit = (True, inner(latex))
            except TimeoutException:
                raise
            except Exception as e:  # noqa: BLE001 (re-raised to math-verify, which catches all)
                hit = (False, e)
            memo.put(latex, hit)
        if hit[0]:
            return hit[1]
        raise hit[1]

    parse_latex_memo._distill_memo = True  # type: ignore[attr-defined]
    parse_latex_memo._distill_store = memo  # type: ignore[attr-defined]
    parser.parse_latex_cached = parse_latex_memo


_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")


def memoise_number_literals() -> None:
    """latex2sympy's number literals behind a memo, digit strings without sympy's expression parser.

    `_Latex2Sympy.parse_number` ends in `sympy.Number(text)`, which runs `sympify` -> `parse_expr` (an
    `exec`) for every literal: about 1 ms, a third of a typical answer's parse. It is a pure function of
    `text` (it reads no parser state) and sympy numbers are immutable, so a memo is exact; for a string of
    digits `sympy.Number` is `Integer(int(text))` (leading zeros are stripped first, as the original does),
    and for ASCII `digits.digits` it is `Float(text)`: `parse_expr`'s `auto_number` turns the one NUMBER
    token into `Float('text')` (`repeated_decimals` only acts on a following `[`), the same call with the
    same string, so the same precision (tests compare `_mpf_` and `_prec` on thousands of literals).
    """
    import sympy
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    if getattr(_Latex2Sympy.parse_number, "_distill_memo", False):
        return
    inner = _Latex2Sympy.parse_number
    memo = Memo()

    def parse_number(self, text: str):  # noqa: ANN202 (a sympy Number)
        if (hit := memo.get(text)) is None:
            digits = text.replace(",", "")
            if digits.isascii() and digits.isdigit():  # str.isdigit alone takes '５', '²'
                hit = sympy.Integer(int(digits))
            elif _DECIMAL.fullmatch(digits):
                hit = sympy.Float(digits)
            else:
                hit = inner(self, text)
            memo.put(text, hit)
        return hit

    parse_number._distill_memo = True  # type: ignore[attr-defined]
    _Latex2Sympy.parse_number = parse_number


class SyntaxFails(Exception):  # noqa: N818 (what the grammar's error listener raises: a plain Exception)
    """A LaTeX string whose token types failed to parse before (math-verify catches any Exception)."""


_FAILS = ("fails",)


class _Mismatch(Exception):
    """A replayed parse asked for a decision the recording does not have (never seen; a guard)."""


def _token_key(parser) -> str | None:  # noqa: ANN001 (PSParser)
    """The token types (and channels) the parser will read: all its decisions depend on, or None."""
    stream = parser.getTokenStream()
    try:
        stream.fill()
    except Exception:  # noqa: BLE001 (a lexer error: the plain parse path raises it as before)
        return None
    return " ".join(f"{t.type}.{t.channel}" for t in stream.tokens)


def _record(parser, into: list) -> None:  # noqa: ANN001
    interp = parser._interp
    predict = interp.adaptivePredict

    def adaptive_predict(input, decision, outer):  # noqa: A002, ANN001, ANN202
        alt = predict(input, decision, outer)
        into.append((decision, alt))
        return alt

    interp.adaptivePredict = adaptive_predict


def _replay(parser, alts: tuple) -> None:  # noqa: ANN001
    it = iter(alts)

    def adaptive_predict(input, decision, outer):  # noqa: A002, ANN001, ANN202
        d, alt = next(it, (None, None))
        if d != decision:
            raise _Mismatch
        return alt

    parser._interp.adaptivePredict = adaptive_predict
    # The recorded parse succeeded, so each of its `sync` calls found the next token expected and did
    # nothing (any recovery reports an error, and the grammar's listener raises on every error).
    parser._errHandler.sync = lambda recognizer: None
    parser._distill_left = it


def two_stage_latex_parser() -> None:
    """ANTLR's two-stage parse (SLL first, full LL where SLL fails), and its decisions replayed by token types.

    ANTLR guarantees that an SLL parse either returns the same tree as LL or reports a syntax error; the
    LaTeX grammar's error listener raises on any error, so an SLL failure is retried with a fresh LL
    parser and the outcome is LL's in every case (2.6x faster on 1,147 distinct answers).

    Replay: the parser's path is a function of the token *types* alone. Its only predicates are
    precedence predicates (`precpred`, parser state), token text is read only when the tree is converted,
    and `adaptivePredict` leaves the input where it found it. So a successful parse's sequence of
    `adaptivePredict` answers, recorded under the key of its token types, is the sequence any input with
    the same key gets: `x^4 + 38` replays `x^{3} + 17`'s decisions. That skips prediction, which ANTLR
    caches for SLL but recomputes from scratch for every full-LL decision (`x^2`, `(x^5+43)`: 4-30 ms a
    parse, each time). A failed or timed-out parse records nothing; a replay that asks for a decision the
    recording lacks (a guard: never seen) is parsed again from scratch.
    """
    from antlr4.atn.PredictionMode import PredictionMode
    from latex2sympy2_extended import latex2sympy2 as l2s
    from math_verify.errors import TimeoutException

    cls = l2s._Latex2Sympy
    if getattr(cls.create_parser, "_distill_two_stage", False):
        return
    create_ll = cls.create_parser
    memo = Memo()

    def two_stage(self, latex_str: str, parser, key: str | None):  # noqa: ANN001, ANN202
        rec: list = []
        _record(parser, rec)
        parser._interp.predictionMode = PredictionMode.SLL
        try:
            tree = parser.math_ll()
        except TimeoutException:
            raise
        except Exception:  # noqa: BLE001 (a syntax error under SLL: LL decides)
            rec = []
            ll = create_ll(self, latex_str)
            _record(ll, rec)
            try:
                tree = ll.math()
            except TimeoutException:
                raise
            except Exception as e:  # a syntax error under LL: every input with these token types has it
                if key is not None and type(e) is Exception:  # the grammar listener's (not a RecursionError)
                    memo.put(key, _FAILS)
                    if _LOG[0] is not None:
                        _LOG[0].publish(key, None)
                raise
        if key is not None:
            memo.put(key, tuple(rec))
            REPLAY_STATS["recorded"] += 1
            if _LOG[0] is not None:
                _LOG[0].publish(key, tuple(rec))
        return tree

    def shared(key: str):  # noqa: ANN202 (decisions, _FAILS or None)
        """Before paying for a new key: what other processes have recorded since the last look."""
        for k, alts in _LOG[0].pull():
            if memo.get(k) is None:  # this process's own records come back too
                memo.put(k, _FAILS if alts is None else alts)
                REPLAY_STATS["shared"] += 1
        return memo.get(key)

    def create_parser(self, latex_str: str):  # noqa: ANN202 (PSParser)
        parser = create_ll(self, latex_str)
        parser.math_ll = parser.math

        def math():  # noqa: ANN202
            key = _token_key(parser)
            if key is None:
                return two_stage(self, latex_str, create_ll_with_math(self, latex_str), None)
            if (alts := memo.get(key)) is None and _LOG[0] is not None:
                alts = shared(key)
            if alts is None:
                return two_stage(self, latex_str, parser, key)
            if alts is _FAILS:
                raise SyntaxFails(f"the token types of {latex_str!r} do not parse (replayed)")
            _replay(parser, alts)
            try:
                tree = parser.math_ll()
                if next(parser._distill_left, None) is None:
                    REPLAY_STATS["replayed"] += 1
                    return tree
            except TimeoutException:
                raise
            except Exception:  # noqa: BLE001 (_Mismatch, or anything unforeseen: parse from scratch)
                pass
            return two_stage(self, latex_str, create_ll_with_math(self, latex_str), None)

        parser.math = math
        return parser

    def create_ll_with_math(self, latex_str: str):  # noqa: ANN001, ANN202
        p = create_ll(self, latex_str)
        p.math_ll = p.math
        return p

    create_parser._distill_two_stage = True  # type: ignore[attr-defined]
    create_parser._distill_replay = memo  # type: ignore[attr-defined]
    cls.create_parser = create_parser


def replay_memo() -> Memo:
    """This process's recorded parser decisions (token-type key -> decisions), installing the patch."""
    from latex2sympy2_extended import latex2sympy2 as l2s

    two_stage_latex_parser()
    return l2s._Latex2Sympy.create_parser._distill_replay


# ------------------------------------------------------------------------------ comparison memo


def last_by_identity(fn: Callable):  # noqa: ANN201 (fn's own signature, one argument)
    """`fn` remembering its last argument and result. A group's gold is compared with each of its
    predictions in turn, so what is derived from it alone (its memo key, its value) is computed once.
    The argument is held here, so an `is` match is this very (immutable) sympy object."""
    slot: list = [None, None]

    def last(x):  # noqa: ANN001, ANN202
        if slot[0] is not x:
            slot[0], slot[1] = x, fn(x)
        return slot[1]

    return last


@functools.cache
def _keyed_types() -> tuple:
    import sympy as sp
    from sympy.core.numbers import ImaginaryUnit
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import BooleanAtom

    return (sp.Number, sp.NumberSymbol, ImaginaryUnit, sp.Add, sp.Mul, sp.Pow, sp.FiniteSet, sp.Interval,
            BooleanAtom, sp.Tuple, Relational, sp.UnevaluatedExpr, sp.factorial, sp.exp, sp.log, sp.sin, sp.cos,
            sp.tan, sp.Abs)  # fmt: skip


class _Incomplete(Exception):  # noqa: N818 (a node whose class and args do not say all of it)
    pass


def structure_key(expr) -> str | None:  # noqa: ANN001 (sympy Basic)
    """A string that determines the expression completely, or None (then nothing is memoised).

    For these node types an expression is its class and its `args` in order, so the key is exactly that,
    read off the tree in one pass (sympy's `srepr` prints the same, 3-4x slower): a Symbol with its
    assumptions, a Float with its exact mantissa, exponent and precision, a Rational with p and q. Left
    out: And/Or (math-verify reads their `_unsorted_args`, not `args`), Dummy and Wild symbols, matrices,
    undefined functions and anything else not listed.
    """
    import sympy as sp

    ok, out, stack = _keyed_types(), [], [expr]
    try:
        while stack:
            node = stack.pop()
            if isinstance(node, str):  # a closing bracket pushed below
                out.append(node)
            else:
                out.append(_node_key(node, ok, sp))
                if node.args and not isinstance(node, sp.Number):
                    stack.append(")")
                    stack.extend(reversed(node.args))
    except _Incomplete:
        return None
    return " ".join(out)


def _node_key(node, ok: tuple, sp) -> str:  # noqa: ANN001 (sympy Basic, the sympy module)
    if isinstance(node, sp.Symbol):
        if type(node) is not sp.Symbol:
            raise _Incomplete
        return f"Symbol({node.name!r}, {sorted(node._assumptions_orig.items())})"
    if not isinstance(node, ok):
        raise _Incomplete
    if isinstance(node, sp.Float):
        return f"Float({node._mpf_}, {node._prec})"
    if isinstance(node, sp.Rational):
        return f"{type(node).__name__}({node.p}, {node.q})"
    return f"{type(node).__name__}(" if node.args else type(node).__name__


# Modules that sympy imports on first use, inside a comparison: `simplify` imports the physics units
# (~0.1 s), Add's flattening the combinatorics and tensor packages. Imported once in a process that
# forks verifier workers, each worker inherits them instead of paying for them on its first `simplify`.
LAZY_IMPORTS = (
    "sympy.physics.units",
    "sympy.combinatorics",
    "sympy.tensor.tensor",
    "sympy.assumptions.wrapper",
)


def import_lazy_modules() -> None:
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


ALL: tuple[Callable[[], None], ...] = (memoise_latex_parser, memoise_number_literals, two_stage_latex_parser,
                                       fast_extract_latex, import_lazy_modules)  # fmt: skip
