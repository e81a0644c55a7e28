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
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": (length,),
    }
    # written front to back, one Arrow chunk at a time (not through a memory map of the whole file,
    # whose pages would count in the stage's RSS): memory is one chunk's tokens
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        doc = 0
        for chunk in col.chunks:
            flat = chunk.flatten().to_numpy().astype(dtype, copy=False)
            n = len(chunk)
            if row_length:  # each document's tokens from its own start on, the gaps 0
                sizes, room = lengths[doc : doc + n], slots[doc : doc + n]
                shift = np.repeat(np.cumsum(room) - room - (np.cumsum(sizes) - sizes), sizes)
                piece = np.zeros(int(room.sum()), dtype)
                piece[np.arange(len(flat)) + shift] = flat
                flat = piece
            flat.tofile(f)
            doc += n
    return length


def drop_pad(rows: np.ndarray) -> np.ndarray:
    """Each row's non-pad tokens moved to its front, in order (pads at the end)."""
    order = np.argsort(rows == PAD_ID, axis=1, kind="stable")
    return np.take_along_axis(rows, order, axis=1)
