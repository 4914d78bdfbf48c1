"""The query-level router: a small classifier that reads a request's text and predicts whether the student
will solve it; requests it doubts go to the frontier tier.

Real traffic carries no category label, so the per-category table cannot route it; this can. It is a
logistic regression on signed hashed word and character n-grams (plus coarse length and number-count
tokens, hashed the same way), trained with numpy only and saved as JSON (no pickle: a router config must be
safe to load from anywhere). It reads the user message as the model received it (prompt template
included: that is what a router sees). Labels are what the pipeline already measured: the student's
per-problem accuracy on the eval problems (soft labels over k samples), and, down-weighted, the teacher's
pass rate on the curated training problems (the student learned from those traces, so their difficulty
carries over).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "distill.query_router/v1"
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class QueryRouterConfig:
    enabled: bool = True
    dims: int = 4096  # hashed feature space (a power of two)
    word_ngrams: int = 2
    char_ngrams: list[int] = field(default_factory=lambda: [2, 4])  # [min, max] within-word n-grams
    l2: float = 1e-3
    steps: int = 400
    lr: float = 0.1
    folds: int = 5  # cross-fitting on the eval problems: each is scored by a model that never saw it
    aux_weight: float = 0.5  # weight of a curate row (teacher pass rate) against an eval row (1.0)
    target_frontier_share: float | None = 0.3
    target_accuracy: float | None = None  # set: the smallest frontier share that reaches it (wins over share)
    seed: int = 0


def _bucket(n: int) -> int:
    return int(math.log2(n + 1))


def tokens(text: str, word_ngrams: int, char_ngrams: list[int]) -> list[str]:
    """The strings a text is hashed from: word n-grams, within-word char n-grams, length and number counts."""
    words = _WORD.findall(text.lower())
    out = [
        f"w:{' '.join(words[i : i + n])}"
        for n in range(1, word_ngrams + 1)
        for i in range(len(words) - n + 1)
    ]
    lo, hi = char_ngrams
    for w in words:
        padded = f"<{w}>"
        out += [f"c:{padded[i : i + n]}" for n in range(lo, hi + 1) for i in range(len(padded) - n + 1)]
    nums = sum(1 for w in words if w.isdigit())
    return [*out, f"len:{_bucket(len(words))}", f"nums:{nums}", f"digits:{_bucket(sum(map(len, words)))}"]


def _hash(token: str, dims: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return h % dims, 1.0 if (h >> 63) & 1 else -1.0


@dataclass(frozen=True)
class Hashed:
    """A sparse (n, dims) feature matrix as coordinate arrays: a text has ~100 non-zeros out of thousands,
    so products are bincounts (a dense float matrix made training 100x slower)."""

    n: int
    dims: int
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    def dot(self, coef: np.ndarray) -> np.ndarray:
        return np.bincount(self.rows, weights=self.vals * coef[self.cols], minlength=self.n)

    def tdot(self, r: np.ndarray) -> np.ndarray:
        return np.bincount(self.cols, weights=self.vals * r[self.rows], minlength=self.dims)

    def dense(self) -> np.ndarray:
        X = np.zeros((self.n, self.dims))
        X[self.rows, self.cols] = self.vals
        return X


def featurize(texts: list[str], dims: int, word_ngrams: int, char_ngrams: list[int]) -> Hashed:
    """Signed hashed log-counts, each row L2-normalised (long prompts do not dominate)."""
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        acc: dict[int, float] = {}
        for tok in tokens(text, word_ngrams, char_ngrams):
            j, sign = _hash(tok, dims)
            acc[j] = acc.get(j, 0.0) + sign
        v = np.array([math.copysign(math.log1p(abs(x)), x) for x in acc.values()])
        norm = float(np.linalg.norm(v)) or 1.0
        rows += [i] * len(acc)
        cols += list(acc)
        vals += (v / norm).tolist()
    return Hashed(
        len(texts), dims, np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), np.array(vals)
    )


def fit(
    X: Hashed, y: np.ndarray, w: np.ndarray, l2: float, steps: int, lr: float
) -> tuple[np.ndarray, float]:
    """Weighted L2-regularised logistic regression on soft labels y in [0, 1] (full-batch Adam: deterministic)."""
    coef, bias = np.zeros(X.dims), 0.0
    m, v, mb, vb = np.zeros_like(coef), np.zeros_like(coef), 0.0, 0.0
    w = w / w.sum()
    for t in range(1, steps + 1):
        p = 1.0 / (1.0 + np.exp(-(X.dot(coef) + bias)))
        r = w * (p - y)
        g, gb = X.tdot(r) + l2 * coef, float(r.sum())
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t
        coef -= lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)
        bias -= lr * (mb / c1) / (math.sqrt(vb / c2) + 1e-8)
    return coef, bias


class QueryRouter:
    """A trained router: weights, feature spec and threshold. `route` names a tier (a LiteLLM model group)."""

    def __init__(self, coef: np.ndarray, bias: float, spec: dict, threshold: float, meta: dict | None = None):
        self.coef, self.bias, self.spec, self.threshold = (
            np.asarray(coef, dtype=np.float64),
            bias,
            spec,
            threshold,
        )
        self.meta = meta or {}

    def scores(self, texts: list[str]) -> np.ndarray:
        """P(the student solves it) per text."""
        X = featurize(texts, self.spec["dims"], self.spec["word_ngrams"], self.spec["char_ngrams"])
        return 1.0 / (1.0 + np.exp(-(X.dot(self.coef) + self.bias)))

    def route(self, text: str) -> str:
        return "frontier" if float(self.scores([text])[0]) < self.threshold else "commodity"

    def route_messages(self, messages: list[dict]) -> str:
        """The tier for a chat request: its last user message is what the router reads."""
        user = [
            m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)
        ]
        if not user:
            raise ValueError("query router: the request has no user message with text content")
        return self.route(user[-1])

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "features": {**self.spec, "hash": "blake2b-64, index = h % dims, sign = top bit"},
            "bias": self.bias,
            "coef": [round(float(c), 7) for c in self.coef],
            "threshold": self.threshold,
            "rule": "frontier if sigmoid(coef . x + bias) < threshold else commodity",
            **self.meta,
        }

    @classmethod
    def load(cls, path: str | Path) -> QueryRouter:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable query router ({e})") from None
        if d.get("format") != FORMAT:
            raise ValueError(
                f"{path}: format {d.get('format')!r} is not {FORMAT!r}; re-export with this version"
            )
        spec = {k: d["features"][k] for k in ("dims", "word_ngrams", "char_ngrams")}
        if len(d["coef"]) != spec["dims"]:
            raise ValueError(f"{path}: {len(d['coef'])} weights for dims={spec['dims']}")
        meta = {
            k: v for k, v in d.items() if k not in ("format", "features", "bias", "coef", "threshold", "rule")
        }
        return cls(np.array(d["coef"]), float(d["bias"]), spec, float(d["threshold"]), meta)


def spec_of(c: QueryRouterConfig) -> dict:
    if c.dims <= 0 or c.dims & (c.dims - 1):
        raise ValueError(f"export.query_router.dims={c.dims}: use a power of two")
    if len(c.char_ngrams) != 2 or not 1 <= c.char_ngrams[0] <= c.char_ngrams[1]:
        raise ValueError(
            f"export.query_router.char_ngrams={list(c.char_ngrams)}: use [min, max], 1 <= min <= max"
        )
    return {"dims": c.dims, "word_ngrams": c.word_ngrams, "char_ngrams": list(c.char_ngrams)}


def fold_of(problem_id: str, folds: int, seed: int) -> int:
    h = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") % folds
