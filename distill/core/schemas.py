"""Row schemas for everything that flows between stages, checked on read and on write.

One place for every schema so that a producer and its consumers can never disagree silently; a bad row
fails with the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NoneType = type(None)
JSONScalar = (str, int, float, bool, NoneType)


class RowError(ValueError):
    """A row that does not match its schema; the message names the file, line and field."""


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    required: bool = True


@dataclass(frozen=True)
class Schema:
    name: str
    fields: dict[str, Field]
    # Extra keys are allowed (rows carry their inputs forward), but never required.

    def check(self, row: Any, where: str) -> dict:
        if not isinstance(row, dict):
            raise RowError(f"{where}: expected a JSON object for a {self.name} row, got {type(row).__name__}")
        for key, spec in self.fields.items():
            if key not in row:
                if spec.required:
                    raise RowError(f"{where}: {self.name} row is missing required field '{key}'")
                continue
            value = row[key]
            if not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
                want = "|".join(t.__name__ for t in spec.types)
                raise RowError(
                    f"{where}: field '{key}' of a {self.name} row must be {want}, got {type(value).__name__}"
                )
        return row


def _f(*types: type, required: bool = True) -> Field:
    return Field(tuple(types), required)


PROBLEM = Schema(
    "problem",
    {
        "problem_id": _f(str),
        "problem": _f(str),
        "answer": _f(str, NoneType),
        "meta": _f(dict, required=False),
    },
)

SAMPLE = Schema(
    "sample",
    {
        **PROBLEM.fields,
        "sample_idx": _f(int),
        "prompt": _f(str),
        "completion": _f(str),
        "reasoning": _f(str, NoneType),
        "response": _f(str, NoneType),
        "finish_reason": _f(str),
        "prompt_tokens": _f(int),
        "completion_tokens": _f(int),
        "teacher": _f(str),
        "sampling": _f(dict),
    },
)

# One supervised pair of a curriculum phase, in TRL's conversational format, with its lineage.
TRAIN_PAIR = Schema(
    "train_pair",
    {
        "messages": _f(list),
        "problem_id": _f(str),
        "sample_idx": _f(int),
        "phase": _f(str),
        "pass_rate": _f(float, int, NoneType),
        "completion_tokens": _f(int),
    },
)

SCHEMAS = {s.name: s for s in (PROBLEM, SAMPLE, TRAIN_PAIR)}

# A sample the curate stage dropped: the input row, its verdict and pass rate, and the one reason.
REJECTED = Schema(
    "rejected",
    {
        **SAMPLE.fields,
        "reject_reason": _f(str),
        "reject_detail": _f(str, NoneType, required=False),
        "verdict": _f(bool, NoneType),
        "pass_rate": _f(float, int, NoneType),
    },
)
SCHEMAS[REJECTED.name] = REJECTED

# One sample of an eval model on a held-out problem, with the answer it gave and its verdict.
EVAL_SAMPLE = Schema(
    "eval_sample", {**SAMPLE.fields, "pred": _f(str, NoneType), "verdict": _f(bool, NoneType)}
)
SCHEMAS[EVAL_SAMPLE.name] = EVAL_SAMPLE
