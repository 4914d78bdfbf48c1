"""math-verify verdicts: fast, and identical to the plain per-row loop.

The plain loop (open-r1's reward) parses the reference, parses the prediction and verifies, once per row.
Real data has many samples per problem and few distinct answers, and math-verify is a pure function of
its input strings, so the verifier here groups rows by reference text, parses each reference once,
parses each distinct string once, and settles each distinct pair of parsed expressions once (many answer
strings parse to one expression). What is left is ANTLR, which `mv_speedups` makes cheap: a parse's
decisions depend only on its token types, so they are recorded once per token-type sequence and replayed
for every answer of the same shape (full-LL prediction, which ANTLR never caches, was most of a parse);
the workers share what they record as they go (`decision_log`), so a shape is paid for once, by the
first worker that meets it. `mv_speedups` also caches pure functions and settles a wrong answer's
comparisons by value where math-verify's own rules can only say False. No step changes an input string
or a verdict; `bench/curate_verify.py` and tests check that on large generated sets.

`strict=True` (curate's default, `verify.strict`) applies `strict`'s documented rules on top: it can only
turn a math-verify True into False. With `strict=False` (the default here) verdicts are math-verify's.

math-verify's timeouts use `signal.alarm`, which only works in a process's main thread: the work runs in
worker processes (or, with `num_workers=0`, in the caller, which must then be a main thread).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from distill.curate import decision_log, mv_literals, mv_settle, mv_speedups
from distill.curate import strict as strict_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeouts:
    parse_s: int = 5
    verify_s: int = 5


def mv_parse(text: str, t: Timeouts = Timeouts()) -> list:
    """math-verify's parse of a bare answer string, as inline math (handles `10\\%`, `3.`)."""
    from math_verify import parse

    return parse(f"${text}$", parsing_timeout=t.parse_s)


def parsed(p: list) -> bool:
    """True when math-verify got a math object; a bare string fallback (e.g. `???`) does not count."""
    return any(not isinstance(x, str) for x in p)


def mv_verify(gold: list, pred: list, t: Timeouts = Timeouts(), strict: bool = False) -> bool:
    """math-verify's verify; `strict` is ours (`strict.py`), not math-verify's own `strict` (variables)."""
    from math_verify import verify

    if not strict:
        return bool(verify(gold, pred, timeout_seconds=t.verify_s))
    with strict_rules.rules():
        return bool(verify(gold, pred, timeout_seconds=t.verify_s))


def fast_verify(gold: list, pred: list, t: Timeouts = Timeouts(), strict: bool = False) -> bool:
    """`mv_verify`, one (gold item, prediction item) comparison at a time, as math-verify's own loop does.

    math-verify's verdict is the OR of one comparison per item pair, each on its own: two strings are
    equal when stripped and non-empty, a string and an expression never, two expressions by
    `sympy_expr_eq`. The last is the only costly one: `_expr_verdict` settles it once per pair of parsed
    expressions (many distinct answers parse to one expression: `42`, `\\boxed{42}`, `42 \\text{ cm}`), and
    skips `simplify` and set algebra where `surely_false` or `surely_unequal` settles a wrong answer. Strict mode only removes Trues.
    """
    from sympy import Basic
    from sympy.matrices import MatrixBase

    for g in gold:
        for p in pred:
            if isinstance(g, (Basic, MatrixBase)) and isinstance(p, (Basic, MatrixBase)):
                if _expr_verdict(g, p, t, strict):
                    return True
            elif isinstance(g, str) and isinstance(p, str):
                if (gs := g.strip()) and gs == p.strip():  # math-verify's string rule, verbatim
                    return True
    return False


_VERDICTS = mv_speedups.Memo()
_gold_key = mv_speedups.last_by_identity(mv_speedups.structure_key)  # a group's gold repeats


def _expr_verdict(g, p, t: Timeouts, strict: bool) -> bool:  # noqa: ANN001 (sympy Basic)
    """math-verify's comparison of two parsed expressions, memoised by their full structure.

    The memo key is both expressions' structure, used only for trees of node types whose class and args hold
    all that `sympy_expr_eq` reads (`mv_speedups.structure_key`); a comparison that raised or timed out is not
    memoised (the plain loop would compute it again, and under load a retry may finish).
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if mv_settle.surely_false(g, p):  # by types and exact values alone: cheaper than the memo's key
        return False
    kg, kp = _gold_key(g), mv_speedups.structure_key(p)
    key = f"{int(strict)}|{kg}|{kp}" if kg is not None and kp is not None else None
    if key is not None and (hit := _VERDICTS.get(key)) is not None:
        return hit
    if mv_settle.surely_unequal(g, p, t.verify_s):
        out = False
    else:
        try:
            with strict_rules.rules() if strict else contextlib.nullcontext():
                out = bool(verify([g], [p], timeout_seconds=t.verify_s, raise_on_error=True))
        except TimeoutException:
            return False
        except ValueError as e:
            if "threaded environment" in str(e):
                raise
            return False
        except Exception:  # noqa: BLE001 (math-verify's own verdict for a comparison that raised)
            return False
    if key is not None:
        _VERDICTS.put(key, out)
    return out


def naive_verdict(
    reference: str | None, prediction: str, t: Timeouts = Timeouts(), strict: bool = False
) -> bool | None:
    """The plain per-row loop: parse reference, parse prediction, verify. The definition of a verdict."""
    if reference is None:
        return None
    gold, pred = mv_parse(reference, t), mv_parse(prediction, t)
    if not (parsed(gold) and parsed(pred)):
        return None
    if strict and strict_rules.percent_mismatch(reference, prediction):
        return False
    return mv_verify(gold, pred, t, strict)


_CACHE = mv_speedups.Memo()


def _parse_timed(text: str, t: Timeouts) -> tuple[list, bool]:
    """`mv_parse(text)`, and whether it ran out of time (math-verify returns [] for both cases)."""
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(f"${text}$", parsing_timeout=t.parse_s, raise_on_error=True), False
    except TimeoutException:
        return [], True
    except ValueError as e:
        if "threaded environment" in str(e):  # math-verify's own error for a non-main thread
            raise
        return [], False
    except Exception:  # noqa: BLE001 (what math-verify turns into [] without raise_on_error)
        return [], False


def fast_parse(text: str, t: Timeouts = Timeouts()) -> list:
    """`mv_parse`, memoised per process, and without the LaTeX parser for number literals.

    For an integer, decimal or fraction literal math-verify returns a fixed shape (`mv_literals`; tests
    check it against `mv_parse` on thousands of literals), and ANTLR's parse of it costs 0.3-10 ms;
    everything else goes to math-verify unchanged. A parse that timed out is not memoised: under load it
    may succeed next time, as it would in the plain loop.
    """
    if (hit := _CACHE.get(text)) is not None:
        return hit
    if (out := mv_literals.literal_parse(text)) is not None:
        timed_out = False
    else:
        out, timed_out = _parse_timed(text, t)
    if not timed_out:
        _CACHE.put(text, out)
    return out


def verify_group(
    reference: str | None, predictions: list[str], t: Timeouts = Timeouts(), strict: bool = False
) -> list[bool | None]:
    """Verdicts of distinct predictions against one reference, parsing the reference once."""
    return _verify_group(reference, predictions, t, strict)[1]


def _verify_group(
    reference: str | None, predictions: list[str], t: Timeouts, strict: bool = False
) -> tuple[bool, list[bool | None]]:
    """(reference parsed?, verdicts)."""
    if reference is None:
        return False, [None] * len(predictions)
    gold = fast_parse(reference, t)
    if not parsed(gold):
        return False, [None] * len(predictions)
    out: list[bool | None] = []
    self_verdict: bool | None = None
    for p in predictions:
        if p == reference:  # exact match: parse(p) is gold, no second parse
            if self_verdict is None:
                self_verdict = mv_verify(gold, gold, t, strict)
            out.append(self_verdict)
            continue
        pred = fast_parse(p, t)
        if not parsed(pred):
            out.append(None)
        elif strict and strict_rules.percent_mismatch(reference, p):
            out.append(False)
        else:
            out.append(fast_verify(gold, pred, t, strict))
    return True, out


def _verify_groups(
    groups: list[tuple[str | None, list[str]]], t: Timeouts, strict: bool = False
) -> list[tuple[bool, list[bool | None]]]:
    return [_verify_group(ref, preds, t, strict) for ref, preds in groups]


def _warm() -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for speed_up in mv_speedups.ALL:
        speed_up()
    mv_parse("1")


# A verifier worker allocates ANTLR parse trees (cyclic: each context points to its parent and children)
# and sympy trees at a high rate; at Python's default threshold (700) the cyclic collector ran ~500 times
# on the bench's 20,000 rows and took ~11% of a worker's CPU, most of it re-scanning the parser and sympy
# state inherited from the parent. Frozen, the inherited heap is never scanned (nor copied on write by the
# scan); the higher first threshold keeps at most ~50,000 young objects (a few MB) between collections.
WORKER_GC_THRESHOLD = (50_000, 20, 100)


def _worker_init(log_path: str) -> None:
    gc.freeze()
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    _warm()
    decision_log.share(decision_log.DecisionLog(log_path))


# One of each construct that answers use. ANTLR builds its prediction DFA lazily, per process: a cold
# parser spends ~60 ms on a LaTeX answer, a warm one ~2 ms. Parsing these once in the parent before the
# workers fork hands every worker the DFA states that all answers share (0.5 CPU-s here saved ~1 CPU-s
# of the workers' on the bench; the shape-specific states are left to the workers and the decision log).
WARM_LATEX = (
    "\\frac{3}{7}", "\\dfrac{12}{5}", "3\\sqrt{2}", "\\sqrt{18}", "2 \\sqrt 3", "2\\cdot\\sqrt{5}", "3\\pi",
    "\\pi \\cdot 2", "\\{1, 2, 3\\}", "1, 2, 3", "[-3, 5)", "(-2, 4]", "[ -1 , 2 )", "\\text{(A)}", "\\textbf{B}",
    "(C)", "\\pm 5", "5, -5", "6!", "x^2 + 5", "x^{3}+4", "12.5", "25\\%", "1,234", "10.00", "x = 4",
    "4 \\text{ apples}", "\\text{4}", "0.125", "\\infty", "a+b", "\\frac{\\sqrt{3}}{2}", "2^{10}",
    "\\left(1,2\\right)", "\\emptyset",
)  # fmt: skip


def warm_parser(groups: list[tuple[str | None, list[str]]], t: Timeouts) -> None:
    """Warms ANTLR in this process when any string will reach the LaTeX parser (not for literals only)."""
    lit = mv_literals.is_literal
    if all((r is None or lit(r)) and all(lit(p) for p in ps) for r, ps in groups):
        return
    enabled = gc.isenabled()
    gc.disable()  # ~15% of the warm-up is the cyclic collector scanning what it just built (none is garbage)
    try:
        _warm()
        for text in WARM_LATEX:
            mv_parse(text, t)
    finally:
        if enabled:
            gc.enable()


class Verifier:
    """Verdicts for (reference, prediction) pairs, deduplicated and spread over worker processes."""

    def __init__(
        self,
        num_workers: int | None = None,
        timeouts: Timeouts = Timeouts(),
        start_method: str = "fork",
        *,
        strict: bool = False,
        keep_pool: bool = False,
    ):
        """`keep_pool`: the worker pool outlives a `verdicts` call, for a caller that verifies chunk after
        chunk (curate's sample pass) and calls `close()`: workers are forked and warmed once, not per chunk,
        and what they memoise (parses, comparisons) serves every later chunk."""
        self.num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        self.timeouts = timeouts
        self.start_method = start_method
        self.strict = strict  # `strict.py`'s rules on top of math-verify (curate: `verify.strict`)
        self.keep_pool = keep_pool
        self._pool: ProcessPoolExecutor | None = None
        self._log: decision_log.DecisionLog | None = None
        self.distinct_pairs = 0
        self.distinct_references = 0
        self.unparsed_references: set[str] = set()  # references math-verify cannot parse (this call's)

    def verdicts(
        self, pairs: list[tuple[str | None, str | None]], on_done: Callable[[int], None] | None = None
    ) -> list[bool | None]:
        """One verdict per pair, in order; a pair without a prediction gets None without any work."""
        by_ref: dict[str | None, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (ref, pred) in enumerate(pairs):
            if pred is not None:
                by_ref[ref][pred].append(i)
        groups = [(ref, list(preds)) for ref, preds in by_ref.items()]
        self.unparsed_references = set()
        self.distinct_references = len(groups)
        self.distinct_pairs = sum(len(p) for _, p in groups)
        out: list[bool | None] = [None] * len(pairs)
        if on_done and (skipped := sum(p is None for _, p in pairs)):
            on_done(skipped)
        for batch, results in self._run(groups):
            for (ref, preds), (ok, res) in zip(batch, results, strict=True):
                if not ok and ref is not None:
                    self.unparsed_references.add(ref)
                for pred, v in zip(preds, res, strict=True):
                    rows = by_ref[ref][pred]
                    for i in rows:
                        out[i] = v
                    if on_done:
                        on_done(len(rows))
        return out

    def _batches(self, groups: list, size: int) -> list[list]:
        """Batches of about `size` predictions; big groups first so the tail is short."""
        groups = sorted(groups, key=lambda g: -len(g[1]))
        batches, cur, n = [], [], 0
        for g in groups:
            cur.append(g)
            n += len(g[1]) + 1
            if n >= size:
                batches.append(cur)
                cur, n = [], 0
        return batches + ([cur] if cur else [])

    def _run(self, groups: list):
        if not groups:
            return
        if self.num_workers <= 0:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("num_workers=0 verifies in this process, which must be its main thread")
            for b in self._batches(groups, 64):
                yield b, _verify_groups(b, self.timeouts, self.strict)
            return
        total = sum(len(p) + 1 for _, p in groups)
        size = max(8, min(64, total // (self.num_workers * 8) or 8))  # small: a short tail on one worker
        ex = self._executor(groups)
        try:
            futs = {
                ex.submit(_verify_groups, b, self.timeouts, self.strict): b
                for b in self._batches(groups, size)
            }
            for f in as_completed(futs):
                yield futs[f], f.result()
        except BaseException:
            self.close()  # a broken or interrupted pool is not reused
            raise
        if not self.keep_pool:
            self.close()

    def _executor(self, groups: list) -> ProcessPoolExecutor:
        """The worker pool, started (and, with fork, warmed on `groups` first) when there is none.

        Its workers share the parser decisions they record (`decision_log`, which lives as long as the
        pool): a new answer shape is paid for once, by the first worker to meet it, in parallel, instead
        of in a serial pass before the fork."""
        if self._pool is None:
            import multiprocessing as mp

            if self.start_method == "fork":
                warm_parser(groups, self.timeouts)
            ctx = mp.get_context(self.start_method)
            self._log = decision_log.DecisionLog.create()
            self._pool = ProcessPoolExecutor(
                self.num_workers, mp_context=ctx, initializer=_worker_init, initargs=(self._log.path,)
            )
        return self._pool

    def close(self) -> None:
        """Stops the worker pool, if one is running, and removes its decision log."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._log is not None:
            self._log.remove()
            self._log = None
