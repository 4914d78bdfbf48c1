"""A phase's rows as the trainer gets them: memory-mapped shards, their lengths checked once, in parallel.

Every rank builds its trainer from the same plan, so whatever runs here runs on every rank. The length
check is a cached `datasets.map` that the main process computes first (`stage.dataset_num_proc`
processes) and the other ranks read back: at 6.1M pairs a serial check on each rank would take hours
before the first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.tokens import token_counts

# Tokens a `datasets.map` writer may buffer before it writes them to Arrow. A per-row map (TRL's tokenising
# and labelling) buffers its rows as Python lists, ~40 bytes a token and column, `writer_batch_size` rows at a
# time (datasets' default: 1,000): for 30k-token traces that is ~2.5 GB per map worker. A budget in tokens
# bounds it by the data's shape, not its length; the rows written are the same either way.
MAP_WRITER_TOKENS = 1_000_000
COUNT_BATCH = 64  # conversations a length-check call tokenises at once


def load_rows(files: str | list[str] | None, cache_dir: str | None = None) -> Any:
    """A phase's TRAIN_PAIR shards (or one .jsonl) as a `datasets.Dataset` of conversations, lineage
    columns dropped. The Arrow data is memory-mapped from `cache_dir` (under the phase's key): no rank holds
    the rows in memory, and TRL's tokenising and packing maps are cached beside it."""
    if not files:
        return None
    from datasets import load_dataset

    files = [files] if isinstance(files, str) else list(files)
    kind = "parquet" if all(f.endswith(".parquet") for f in files) else "json"
    ds = load_dataset(kind, data_files=files, split="train", cache_dir=cache_dir)
    return ds.select_columns(["messages"])


def data_cache(plan: dict) -> str:
    """Where a phase's Arrow data and TRL's map caches live: its own directory, which a new key resets."""
    return str(Path(plan["output_dir"]) / "data_cache")


def writer_rows(mean_tokens: float) -> int:
    """Rows per Arrow write for rows of this mean length: MAP_WRITER_TOKENS' worth, within 1..1000."""
    return max(1, min(1000, int(MAP_WRITER_TOKENS // max(mean_tokens, 1.0))))


def _count_tokens(batch: dict, tok: Any) -> dict:
    texts = [tok.apply_chat_template(m, tokenize=False) for m in batch["messages"]]
    return {"n_tokens": token_counts(tok, texts)}


def phase_token_counts(tok: Any, plan: dict, name: str) -> Any:
    """Each row's length in student tokens (the training template, as TRL tokenises it), an Arrow array in
    file order; computed by the main process in `dataset_num_proc` processes and cached, read by the rest."""
    from accelerate import PartialState

    ds = load_rows(plan[name], data_cache(plan))
    with PartialState().main_process_first():
        counted = ds.map(
            _count_tokens,
            batched=True,
            batch_size=COUNT_BATCH,
            fn_kwargs={"tok": tok},
            remove_columns=ds.column_names,
            num_proc=plan.get("dataset_num_proc"),
            desc=f"Counting {name} tokens",
        )
    return counted.data.column("n_tokens")


def locate(files: str | list[str], i: int) -> tuple[str, int]:
    """The file and 1-based row within it of row `i` (0-based) of the files read in order."""
    files = [files] if isinstance(files, str) else list(files)
    for f in files:
        if f.endswith(".parquet"):
            import pyarrow.parquet as pq

            n = pq.ParquetFile(f).metadata.num_rows
        else:
            with open(f, encoding="utf-8") as fh:
                n = sum(1 for line in fh if line.strip())
        if i < n:
            return f, i + 1
        i -= n
    raise IndexError(f"row {i} is past the end of {files}")


def check_lengths(tok: Any, plan: dict, max_length: int) -> float:
    """Rows are not truncated (a cut trace loses its answer and its end-of-turn token; BFD packing would
    cut a longer row silently): a row over max_length is an error naming its file and row. Returns the
    rows' mean length in tokens, which sizes TRL's map writes (MAP_WRITER_TOKENS)."""
    import pyarrow.compute as pc

    total, rows = 0, 0
    for name in ("train_file", "val_file"):
        if not plan.get(name):
            continue
        n = phase_token_counts(tok, plan, name)
        over = pc.greater(n, max_length)
        if pc.any(over).as_py():
            i = pc.index(over, True).as_py()
            f, row = locate(plan[name], i)
            raise ValueError(
                f"{f}: row {row} has {n[i].as_py()} tokens > max_length={max_length}; raise "
                "stage.max_length or filter by length in curate"
            )
        total, rows = total + (pc.sum(n).as_py() or 0), rows + len(n)
    return total / max(rows, 1)
