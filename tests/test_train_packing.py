"""Train's packing and page release: TRL's bins exactly, with less of a batch held at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from trl.data_utils import _pack_bfd as trl_pack_bfd

from distill.train.packing import pack_bfd
from distill.train.pages import ReleasingPages, release_mapped_pages


def _table(lengths, rng, *, dtype=None, list_type=pa.ListArray, columns=("input_ids", "labels")):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(
        np.int64 if list_type is pa.LargeListArray else np.int32
    )
    cols = {}
    for name in columns:
        values = pa.array(rng.integers(0, 100, int(offsets[-1])), type=pa.int64()).cast(dtype or pa.int64())
        cols[name] = list_type.from_arrays(pa.array(offsets), values)
    return pa.table(cols)


def _shuffled(table, rng):
    """A shuffled map batch, as datasets hands it over: one one-row chunk per row."""
    return pa.Table.from_batches(
        [b for i in rng.permutation(len(table)) for b in table.slice(int(i), 1).to_batches()]
    )


@pytest.mark.parametrize("seed", range(6))
def test_packing_is_trls_bin_for_bin(seed):
    """Long-tailed lengths with ties, shuffled or contiguous, int64/int32 and list/large_list columns:
    the same table as TRL's `_pack_bfd`, schema included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    lengths = np.minimum(rng.lognormal(5.5, 1.0, n).astype(np.int64) + 1, 4096)
    lengths[rng.integers(0, n, n // 4)] = 64  # ties: BFD's order among equal lengths must be TRL's
    kind = [dict(), dict(dtype=pa.int32()), dict(list_type=pa.LargeListArray), dict(columns=("input_ids",))][
        seed % 4
    ]
    table = _table(lengths, rng, **kind)
    batch = _shuffled(table, rng) if seed % 2 else table.slice(0)
    ours, theirs = pack_bfd(batch, 4096), trl_pack_bfd(batch, 4096)
    assert ours.schema == theirs.schema
    assert ours.equals(theirs)
    assert ours.column("seq_lengths").equals(theirs.column("seq_lengths"))


def test_rows_trl_would_cut_refuse_or_drop_go_to_trl():
    rng = np.random.default_rng(7)
    over = _table([10, 5000, 20], rng)  # truncated by TRL
    empty = _table([10, 0, 20], rng)  # filtered by TRL
    flags = pa.table({"input_ids": pa.array([[True, False], [True]])})  # booleans: no fixed-width copy
    for batch in (over, empty, flags):
        assert pack_bfd(batch, 64).equals(trl_pack_bfd(batch, 64))
    assert pack_bfd(over, 64, "split").equals(trl_pack_bfd(over, 64, "split"))
    uneven = pa.table({"input_ids": pa.array([[1, 2], [3]]), "labels": pa.array([[1], [3]])})
    with pytest.raises(ValueError, match="same length"):
        pack_bfd(uneven, 64)


PEAK = """
import sys, tracemalloc, numpy as np, pyarrow as pa
sys.path.insert(0, {tests!r})
from test_train_packing import _shuffled, _table
from trl.data_utils import _pack_bfd
from distill.train.packing import pack_bfd
rng = np.random.default_rng(0)
batch = _shuffled(_table(np.full(400, 4000), rng), rng)
pool = pa.default_memory_pool(); base = pool.bytes_allocated()
tracemalloc.start()
out = {{"trl": _pack_bfd, "ours": pack_bfd}}[{which!r}](batch, 32768)
print((max(pool.max_memory() - base, 0) + tracemalloc.get_traced_memory()[1]) / batch.nbytes)
"""


def test_packing_copies_a_batch_once():
    """Measured in fresh processes (Arrow's pool peak is process-wide), numpy's buffers counted too:
    TRL holds ~2.5 batches beyond its input at its peak, this about one."""
    from pathlib import Path

    def peak(which: str) -> float:
        code = textwrap.dedent(PEAK.format(tests=str(Path(__file__).parent), which=which))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    theirs, ours = peak("trl"), peak("ours")
    assert theirs > 2.0, theirs
    assert ours < 1.3, ours


def _resident_mb(path: str) -> float:
    kb, name = 0, None
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:
            name = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Rss:" and name == path:
            kb += int(fields[1])
    return kb / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps is Linux's")
def test_mapped_pages_are_handed_back_and_the_data_stays(tmp_path):
    """A fully read memory-mapped Arrow file is resident in this process; after the release it is not,
    and every value still reads back the same (the pages fault in again from the page cache)."""
    path = str(tmp_path / "cache-0.arrow")
    values = np.arange(8 << 20, dtype=np.int64)  # 64 MB
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("x", pa.int64())])) as writer:
        writer.write_table(pa.table({"x": values}))
    with pa.memory_map(path) as source:
        column = pa.ipc.open_stream(source).read_all().column("x")
        assert column.chunk(0).to_numpy()[::512].sum() == values[::512].sum()
        assert _resident_mb(path) > 48
        assert release_mapped_pages() >= 64 << 20
        assert _resident_mb(path) < 4
        assert np.array_equal(column.chunk(0).to_numpy(), values)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise on /proc/self/maps is Linux's")
def test_packing_hands_back_the_mapped_rows_it_copied(tmp_path):
    """A shuffled batch read from a memory-mapped cache (as a map worker reads it): TRL's packing leaves
    the rows it read resident; this one leaves none of them, and packs the same bins."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "cache-1.arrow")
    table = _table(np.full(400, 4000), rng)  # 25 MB
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=40)
    with pa.memory_map(path) as source:
        mapped = pa.ipc.open_stream(source).read_all()
        release_mapped_pages()
        theirs = trl_pack_bfd(_shuffled(mapped, np.random.default_rng(0)), 32768)
        assert _resident_mb(path) > 16
        release_mapped_pages()
        ours = pack_bfd(_shuffled(mapped, np.random.default_rng(0)), 32768)
        assert _resident_mb(path) < 2
        assert ours.equals(theirs)


def test_a_releasing_map_function_pickles_and_hashes_as_its_function():
    """datasets pickles a map's function to its workers and hashes it into the cache fingerprint: the
    call count is not part of either, so a rerun finds the same cache."""
    import pickle

    from datasets.fingerprint import Hasher

    a, b = ReleasingPages(len, 4), ReleasingPages(len, 4)
    assert a([1, 2]) == 2 and a._calls == 1
    assert Hasher.hash(a) == Hasher.hash(b) != Hasher.hash(ReleasingPages(len, 5))
    c = pickle.loads(pickle.dumps(a))
    assert c.function is len and c.every == 4 and c._calls == 0
