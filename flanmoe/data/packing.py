"""How the pretraining documents become the fixed-length chunks that span corruption cuts.

- ``write_stream``: one column of the encoded documents as one flat ``.npy`` stream: end to end
  (``packing: stream``, T5's packing: a chunk may hold the end of one document and the start of the
  next), or each document from a chunk boundary on, its last chunk padded (``packing: document``: no
  chunk holds two documents).
- ``drop_pad``: a corrupted row's padding moved to its end (document packing: padding inside a chunk,
  masked or not, never reaches the model).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from flanmoe.data.tokenizer import PAD_ID


def write_stream(
    encoded: datasets.Dataset, column: str, dtype: type, path: Path, row_length: int | None = None
) -> int:
    """The list column ``column`` of ``encoded``, flattened into the ``.npy`` file ``path``; with
    ``row_length`` every document starts at a multiple of it, the gaps left 0 (pad, no flag). Returns
    the stream's length (with ``row_length``: padded)."""
    col = encoded.data.table.column(column)
    lengths = np.concatenate([np.diff(c.offsets.to_numpy()) for c in col.chunks]) if col.num_chunks else []
    lengths = np.asarray(lengths, np.int64)
    slots = -(-lengths // row_length) * row_length if row_length else lengths
    length = int(slots.sum())
    stream = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))  # a new file: zeros
    starts = np.cumsum(slots) - slots
    doc = 0
    for chunk in col.chunks:
        flat = chunk.flatten().to_numpy()
        n = len(chunk)
        if row_length:  # each document's tokens from its own start on
            sizes = lengths[doc : doc + n]
            shift = np.repeat(starts[doc : doc + n] - (np.cumsum(sizes) - sizes), sizes)
            stream[np.arange(len(flat)) + shift] = flat
        else:
            stream[starts[doc] : starts[doc] + len(flat)] = flat
        doc += n
    stream.flush()
    del stream
    return length


def drop_pad(rows: np.ndarray) -> np.ndarray:
    """Each row's non-pad tokens moved to its front, in order (pads at the end)."""
    order = np.argsort(rows == PAD_ID, axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1)
