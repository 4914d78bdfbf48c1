"""Rank 0's training progress as one line per logging step, for the driver's progress bar.

The driver shows the ranks' `[distill]` lines and draws these as one bar (distill.core.report.RankConsole);
TRL's own bar and its raw loss dicts stay in ranks.log.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from distill.core.report import progress_line


class ProgressLines(TrainerCallback):
    """Step, loss, learning rate and tokens/s (TRL's `num_tokens` is summed over ranks) at every log."""

    def __init__(self, phase: str) -> None:
        self.bar = f"train {phase}"
        self.t0: float | None = None
        self.tokens0 = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.t0 = time.perf_counter()
        self._emit(state, {})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._emit(state, logs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._emit(state, {})

    def _emit(self, state: Any, logs: dict) -> None:
        if not state.is_world_process_zero:
            return
        post: dict[str, Any] = {}
        if "loss" in logs:
            post["loss"] = float(logs["loss"])
        if "learning_rate" in logs:
            post["lr"] = float(logs["learning_rate"])
        if "num_tokens" in logs and self.t0 is not None:
            tokens = float(logs["num_tokens"])
            if not self.tokens0:  # the first log: a resumed run starts counting from its checkpoint
                self.tokens0, self.t0 = tokens, time.perf_counter()
            elif (dt := time.perf_counter() - self.t0) > 0:
                post["tok_s"] = round((tokens - self.tokens0) / dt)
        print(progress_line(self.bar, state.global_step, state.max_steps or None, "step", **post), flush=True)
