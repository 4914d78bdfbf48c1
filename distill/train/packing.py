"""TRL's BFD packing with one copy of a batch's token columns instead of three or four.

TRL's `_pack_bfd` concatenates a batch's rows, filters and slices every column and then takes them into
bin order: 3.5x a batch's int64 token columns at its peak in each map worker (1,000 rows of ~6.5k-token
traces, two columns: ~350 MB; 30k-token traces: ~1.7 GB), all while the mapped input pages it read stay
resident. The bins depend on the rows' lengths only, so here TRL's own function packs a stand-in table
(each row's position repeated over its length, int16: a sixteenth of the two int64 columns) and the real
columns are copied once, in the order it chose, a few rows at a time, handing the mapped pages back as it
goes (`pages.release`). The packed rows, bins and `seq_lengths` are TRL's exactly (tested against it); a
batch TRL would filter, truncate or refuse (an empty row, one longer than the pack, columns of unequal
lengths) goes to TRL's function as is.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from trl.data_utils import _pack_bfd as _trl_pack_bfd

from distill.train.pages import mapped_files, release

# rows copied (and their mapped pages handed back) at a time: a random row's read maps more than its
# bytes (fault-around, large folios: ~1-2 MB a row measured on this machine's /tmp)
GROUP_ROWS = 8


def pack_bfd(examples: pa.Table, seq_length: int, on_seq_length_overflow: str = "truncate") -> pa.Table:
    """Drop-in for `trl.data_utils._pack_bfd` (same arguments, same result)."""
    lengths = [_lengths(column) for column in examples.columns]
    n = len(lengths[0]) if lengths else 0
    exact = (
        on_seq_length_overflow == "truncate"
        and 0 < n <= 2**15
        and all(x is not None and np.array_equal(lengths[0], x) for x in lengths)
    )
    lengths = lengths[0] if exact else None
    if not exact or lengths.min() == 0 or lengths.max() > seq_length or lengths.sum() >= 2**31:
        return _trl_pack_bfd(examples, seq_length, on_seq_length_overflow)  # TRL's checks and errors
    stand_in = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
        pa.array(np.repeat(np.arange(n, dtype=np.int16), lengths)),
    )
    packed = _trl_pack_bfd(pa.table({"row": stand_in}), seq_length, "truncate")
    seq_lengths = packed.column("seq_lengths").combine_chunks()
    if pa.types.is_large_list(examples.column(0).type):  # TRL's lengths are the column's offset type
        seq_lengths = pa.ListArray.from_arrays(seq_lengths.offsets, seq_lengths.values.cast(pa.int64()))
    row = packed.column("row").combine_chunks()
    starts = np.concatenate([[0], np.cumsum(seq_lengths.values.to_numpy())[:-1]]).astype(np.int64)
    order = row.values.to_numpy()[starts].astype(np.int64)
    bin_offsets = row.offsets.to_numpy()
    del packed, row, stand_in
    columns = [
        type(values_type).from_arrays(pa.array(bin_offsets, type=values_type.offsets.type), values)
        for values_type, values in _gathered(examples, order)
    ]
    return pa.Table.from_arrays([*columns, seq_lengths], names=[*examples.column_names, "seq_lengths"])


def _lengths(column: pa.ChunkedArray) -> np.ndarray | None:
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or column.null_count:
        return None
    return np.concatenate([c.value_lengths().to_numpy(zero_copy_only=False) for c in column.chunks] or [[]])


def _gathered(examples: pa.Table, order: np.ndarray) -> list[tuple[pa.Array, pa.Array]]:
    """Each column's values in `order`, as one array (datasets' writer would concatenate chunks again).
    Fixed-width columns are filled GROUP_ROWS rows at a time into one buffer, handing back the mapped
    pages read after each group; others (strings, booleans) are concatenated at once."""
    slices = [examples.slice(int(i), 1) for i in order]
    first = [examples.column(name).chunk(0) for name in examples.column_names]
    pages = mapped_files()  # the batch's input is mapped by now; the maps are read once a batch
    if not all(
        pa.types.is_primitive(c.type.value_type) and not pa.types.is_boolean(c.type.value_type) for c in first
    ):
        taken = pa.concat_tables(slices).combine_chunks()
        release(pages)
        return [
            (c, taken.column(c_name).chunk(0).flatten())
            for c, c_name in zip(first, examples.column_names, strict=True)
        ]
    total = sum(len(s.column(0).chunk(0).flatten()) for s in slices)
    types = [c.type.value_type for c in first]
    buffers = [pa.allocate_buffer(total * t.bit_width // 8) for t in types]  # Arrow's pool: one account
    out = [np.frombuffer(b, dtype=t.to_pandas_dtype()) for b, t in zip(buffers, types, strict=True)]
    pos = 0
    for row in range(0, len(slices), GROUP_ROWS):
        part = pa.concat_tables(slices[row : row + GROUP_ROWS]).combine_chunks()
        n = 0
        for buf, name in zip(out, examples.column_names, strict=True):
            values = part.column(name).chunk(0).flatten().to_numpy()
            buf[pos : pos + len(values)] = values
            n = len(values)
        release(pages)  # these rows are copied: their mapped pages are not read again
        pos += n
    return [
        (c, pa.Array.from_buffers(t, total, [None, b])) for c, t, b in zip(first, types, buffers, strict=True)
    ]
