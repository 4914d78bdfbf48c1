"""Narrow patches of TRL internals that the train worker applies, each guarded so that a TRL rename
leaves TRL's own behaviour in place rather than breaking training.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any


def score_label_positions_only(trainer: Any) -> None:
    """TRL's fused LM head scores only the positions that carry a label on Triton devices, and every
    position elsewhere (a constant tile shape for compiled backends such as Neuron). On CPU ranks nothing
    recompiles, and prompt tokens are ~2/3 of a toy batch: scoring just the labelled ones is the same loss
    (masked positions contribute exact zeros either way) for ~10% of a toy step. TRL's switch is a private
    module global, so it is set only around this trainer's loss and left alone if TRL renames it.
    """

    import trl.trainer.utils as trl_utils

    triton = getattr(trl_utils, "_use_triton", None)
    if triton is None:
        return

    @contextlib.contextmanager
    def compact() -> Any:
        trl_utils._use_triton = lambda device: device.type == "cpu" or triton(device)
        try:
            yield
        finally:
            trl_utils._use_triton = triton

    compute_loss = trainer.compute_loss

    def compute_loss_compact(*args: Any, **kwargs: Any) -> Any:
        with compact():
            return compute_loss(*args, **kwargs)

    trainer.compute_loss = compute_loss_compact


@contextlib.contextmanager
def bounded_preparation(rows: int) -> Any:
    """TRL's dataset preparation calls `Dataset.map` with datasets' default writer batch (1,000 rows) and
    no way to pass another; around the trainer's construction, a map that names no `writer_batch_size` gets
    `rows`. Its function also hands back the cache pages it has read (`pages.ReleasingPages`: after every
    batch of a batched map, every `rows` rows of a per-row one), and BFD packing holds one copy of a batch
    (`packing.pack_bfd`) instead of TRL's four. The written rows, their order and the packed bins are
    unchanged (packing's own `batch_size` is left alone); only how much of its input and output a map
    worker holds is bounded.
    """
    import trl.data_utils as trl_data
    from datasets import Dataset

    from distill.train.packing import pack_bfd
    from distill.train.pages import ReleasingPages

    original = Dataset.map
    names = list(inspect.signature(original).parameters)

    @functools.wraps(original)
    def bounded(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = dict(zip(names, (self, *args), strict=False))
        if "writer_batch_size" not in given and "writer_batch_size" not in kwargs:
            kwargs["writer_batch_size"] = rows
        function = given.get("function", kwargs.get("function"))
        if function is not None and not isinstance(function, ReleasingPages):
            every = 1 if given.get("batched", kwargs.get("batched", False)) else rows
            args = tuple(
                ReleasingPages(function, every) if n == "function" else a
                for n, a in zip(names[1:], args, strict=False)
            )
            if "function" in kwargs:
                kwargs["function"] = ReleasingPages(function, every)
        return original(self, *args, **kwargs)

    trl_pack_bfd = getattr(trl_data, "_pack_bfd", None)
    Dataset.map = bounded
    if trl_pack_bfd is not None:  # pack_dataset looks it up when it runs
        trl_data._pack_bfd = pack_bfd
    try:
        yield
    finally:
        Dataset.map = original
        if trl_pack_bfd is not None:
            trl_data._pack_bfd = trl_pack_bfd
