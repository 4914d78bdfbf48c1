"""Mapped Arrow pages a map worker has finished reading, handed back to the kernel.

`datasets` memory-maps its cache files, and every page a map worker reads stays in that process's RSS
until the file is unmapped: a worker that reads its shard of a tokenised cache ends holding the whole
shard (~400 MB per 3.5k reasoning traces; 6.1M pairs are hundreds of GB). The pages are clean and backed
by the file, so the kernel can take them back, but RSS-based accounting (Slurm's `MaxRSS` and its
over-memory kill, the OOM killer's score, `top`) charges them to the job as if they were resident data.
`madvise(MADV_DONTNEED)` on a read-only file mapping drops them from the process's page tables; a later
read faults the same bytes back in from the page cache, so nothing that still points into the mapping
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any

MADV_DONTNEED = 4  # Linux <sys/mman.h>; the same on x86-64 and aarch64


@functools.cache
def _madvise() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def mapped_files(suffix: str = ".arrow") -> list[tuple[int, int]]:
    """(start, end) of this process's read-only mappings of files named `*suffix` (none but on Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and "w" not in fields[1] and fields[5].rstrip("\n").endswith(suffix):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def release(ranges: list[tuple[int, int]]) -> int:
    """Drop the resident pages of `ranges` (from `mapped_files`, still mapped); returns the bytes advised."""
    return sum(end - start for start, end in ranges if _madvise()(start, end - start, MADV_DONTNEED) == 0)


def release_mapped_pages(suffix: str = ".arrow") -> int:
    """Drop this process's resident pages of its read-only mappings of files named `*suffix`; returns
    how many bytes of mappings were advised. Anywhere but Linux it does nothing (returns 0)."""
    return release(mapped_files(suffix))


def _release_arrow_pool() -> None:
    """Arrow's allocator keeps what a batch freed for the next one; a worker that has just written its
    batch gives it back, so its RSS is the batch it holds, not the largest it has held."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


class ReleasingPages:
    """A `Dataset.map` function that hands back the mapped cache pages it has read every `every` calls,
    so a map worker's RSS is bounded by its batches, not its shard. A class so that `datasets` can pickle
    it to its `num_proc` workers and hash it into the cache fingerprint like the function it wraps.
    """

    def __init__(self, function: Any, every: int = 1) -> None:
        self.function = function
        self.every = every
        self._calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.function(*args, **kwargs)
        self._calls += 1
        if self._calls % self.every == 0:
            release_mapped_pages()
            _release_arrow_pool()
        return out

    def __getstate__(self) -> dict:
        return {"function": self.function, "every": self.every}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["function"], state["every"])
