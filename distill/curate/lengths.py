"""Pair lengths in the student's tokens, as train will count them: the student's tokenizer and training
chat template over the whole conversation.

The teacher's `completion_tokens` are the wrong unit for the train bound: a gpt-oss or R1 teacher's
vocabulary splits text differently from the student's, and the conversation adds the prompt and the chat
markup. A pair over train's `max_length` would be cut by packing (losing its answer and its end-of-turn
token), so curate drops it here under its own reason, `over_max_length`, and train checks that none is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.core.config import ModelRef
from distill.core.paths import Paths
from distill.core.tokens import token_counts
from distill.engines.base import model_location


@dataclass
class LengthConfig:
    # The bound in student tokens; by default train's `max_length` where the experiment sets one.
    max_length: int | None = "${oc.select:stages.train.max_length,null}"  # type: ignore[assignment]
    # conversations rendered and tokenized at a time: a batch's encodings are ~100 bytes a token, so 1024
    # reasoning traces (~8M tokens) held ~1 GB, which every verifier worker forked after it counted again
    batch: int = 64


_CACHE: dict[tuple, Any] = {}


def student_tokenizer(student: ModelRef, paths: Paths) -> Any:
    """The student's tokenizer with the template train uses (its own if it marks `{% generation %}`,
    else TRL's training variant, which renders the same text); loaded once per process, not per chunk."""
    at = (
        str(model_location(student.tokenizer or student.path, paths)),
        student.revision,
        student.chat_template,
    )
    if at not in _CACHE:
        _CACHE.clear()
        _CACHE[at] = _load_tokenizer(student, paths)
    return _CACHE[at]


def _load_tokenizer(student: ModelRef, paths: Paths) -> Any:
    from transformers import AutoTokenizer
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tok = AutoTokenizer.from_pretrained(
        model_location(student.tokenizer or student.path, paths),
        revision=None if student.tokenizer else student.revision,
        trust_remote_code=student.trust_remote_code,
    )
    if student.chat_template:
        tok.chat_template = student.chat_template
    if tok.chat_template and not has_generation_markers(tok.chat_template):
        try:
            tok.chat_template = get_training_chat_template(tok)
        except ValueError:
            pass  # train names this template problem itself; the text it renders is what is measured
    return tok


def student_lengths(rows: list[dict], tok: Any, batch: int = 64) -> list[int]:
    """Tokens of each row's (prompt, completion) conversation in the student's template; only the counts
    are kept, the encodings of one small batch at a time."""
    out: list[int] = []
    for i in range(0, len(rows), batch):
        convs = [
            [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
            for r in rows[i : i + batch]
        ]
        texts = [tok.apply_chat_template(c, tokenize=False) for c in convs]
        out += token_counts(tok, texts)
    return out


def reject_over_length(rows: list[dict], cfg: Any, paths: Paths) -> dict:
    """Sets `student_tokens` on every row still alive, and `over_max_length` on those over the bound."""
    lc = cfg.stage.lengths
    alive = [r for r in rows if r["reject_reason"] is None]
    if lc.max_length is None or not alive:
        return {"student_max_length": lc.max_length}
    from omegaconf import OmegaConf

    tok = student_tokenizer(OmegaConf.to_object(cfg.student), paths)
    over = 0
    for r, n in zip(alive, student_lengths(alive, tok, lc.batch), strict=True):
        r["student_tokens"] = n
        if n > lc.max_length:
            r["reject_reason"], r["reject_detail"] = (
                "over_max_length",
                f"{n} > {lc.max_length} student tokens",
            )
            over += 1
    return {"student_max_length": lc.max_length, "over_max_length": over}
