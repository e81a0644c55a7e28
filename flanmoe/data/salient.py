"""Salient-span masking (REALM's salient span masking, Guu et al. 2020) in T5's span-corruption layout.

- ``salient_token_flags``: which tokens of a document overlap its salient character spans (the world's
  fact values: byte-level BPE's ``Ġviolin`` covers `` violin``: salient).
- ``check_salient``: the ``ValueError`` for ``salient_fraction`` > 0 on a corpus without the column;
  ``encode_salient``: token ids and salient flags of a batch of documents.
- ``salient_corrupt``: T5's layout of rows with such masks, cut to their kept lengths and padded.
- ``salient_noise_mask``: per raw chunk, the noise mask that masks each maximal run of salient tokens as
  one span, and how many leading tokens of the chunk are kept so that the corrupted row fits.

Rules of the mask (``[rows, raw]``, vectorized): a run at position 0 is not masked (T5 rows start with
non-noise); spans are kept in order while the targets (``<extra_id_0> span0 ... <extra_id_n>`` + eos)
fit ``target_length`` with one sentinel per non-noise run; then the row keeps its longest prefix whose
inputs (non-noise + one sentinel per span + eos) fit ``input_length``, never cutting inside a span (a
span in the dropped tail is dropped with it). ``span_corrupt_batch`` of ``tokens[:keep]`` and
``mask[:keep]`` then gives the row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import datasets
import numpy as np
from tokenizers import Tokenizer

from flanmoe.data.config import TokenizeConfig


def salient_token_flags(offsets: np.ndarray, spans: Sequence[int], text_length: int) -> np.ndarray:
    """Bool ``[n]``: token i overlaps a salient span.

    ``offsets``: ``[n, 2]`` character offsets of the tokens (half-open; special tokens have empty ones
    and are never salient). ``spans``: flattened ``[s0, e0, s1, e1, ...]``, half-open character offsets
    into a text of ``text_length`` characters. Raises ``ValueError`` for an odd count or a span outside
    the text.
    """
    pairs = np.asarray(spans, np.int64)
    if pairs.size % 2:
        raise ValueError(f"salient_spans: {pairs.size} offsets, expected [start, end] pairs")
    pairs = pairs.reshape(-1, 2)
    bad = (pairs[:, 0] < 0) | (pairs[:, 0] > pairs[:, 1]) | (pairs[:, 1] > text_length)
    if bad.any():
        raise ValueError(
            f"salient_spans: span {pairs[bad][0].tolist()} outside a {text_length}-character text"
        )
    cover = np.zeros(text_length + 1, np.int64)
    np.add.at(cover, pairs[:, 0], 1)
    np.add.at(cover, pairs[:, 1], -1)
    salient_chars = np.concatenate([[0], np.cumsum(np.cumsum(cover)[:-1] > 0)])  # prefix sums
    offsets = np.asarray(offsets, np.int64).reshape(-1, 2)
    return salient_chars[offsets[:, 1]] > salient_chars[offsets[:, 0]]


def check_salient(docs: datasets.Dataset, cfg: TokenizeConfig, where: object) -> None:
    """``ValueError`` naming ``tokenize.salient_fraction`` when it needs a ``salient_spans`` column
    that the pretraining corpus ``where`` lacks (real corpora have none)."""
    if cfg.salient_fraction > 0 and "salient_spans" not in docs.column_names:
        raise ValueError(
            f"tokenize.salient_fraction: {cfg.salient_fraction} > 0 masks salient spans, but {where} has "
            f"no `salient_spans` column (columns: {', '.join(docs.column_names)}); set it to 0.0"
        )


def encode_salient(batch: dict, tok: Tokenizer) -> dict:
    """The tokenize stage's batched map over documents: ``ids`` (each ending with eos) and ``salient``
    (1 for each token overlapping one of the document's ``salient_spans``).

    Vectorized over the batch: the documents' texts are laid end to end (a span never crosses its own
    text's end, checked first), and the tokens' offsets are shifted to match."""
    texts = batch["text"]
    encodings = tok.encode_batch(texts)
    ids = [np.asarray(e.ids, np.int32) for e in encodings]
    counts = [len(x) for x in ids]
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    base = np.cumsum(lengths) - lengths
    spans = [sp or [] for sp in batch["salient_spans"]]
    odd = [i for i, sp in enumerate(spans) if len(sp) % 2]
    if odd:
        raise ValueError(f"salient_spans: {len(spans[odd[0]])} offsets, expected [start, end] pairs")
    pairs = np.fromiter(itertools.chain.from_iterable(spans), np.int64, sum(map(len, spans))).reshape(-1, 2)
    doc = np.repeat(np.arange(len(texts)), [len(sp) // 2 for sp in spans])
    bad = (pairs[:, 0] < 0) | (pairs[:, 0] > pairs[:, 1]) | (pairs[:, 1] > lengths[doc])
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"salient_spans: span {pairs[k].tolist()} outside a {lengths[doc[k]]}-character text"
        )
    offsets = np.array(list(itertools.chain.from_iterable(e.offsets for e in encodings)), np.int64)
    offsets = offsets.reshape(-1, 2) + np.repeat(base, counts)[:, None]
    flags = salient_token_flags(offsets, (pairs + base[doc, None]).ravel(), int(lengths.sum()))
    return {"ids": ids, "salient": np.split(flags.astype(np.int8), np.cumsum(counts)[:-1])}


def salient_corrupt(
    tokens: np.ndarray,
    mask: np.ndarray,
    keep: np.ndarray,
    sentinel_ids: Sequence[int],
    eos_id: int,
    pad_id: int,
    input_length: int,
    target_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``span_corrupt_batch`` of each row's ``tokens[:keep]`` with ``mask[:keep]`` (rows of different
    lengths, all starting with non-noise), padded: ``(inputs [rows, input_length], targets [rows,
    target_length])``. The lengths must fit (``salient_noise_mask`` sees to it)."""
    rows, raw = tokens.shape
    sentinels = np.asarray(sentinel_ids, np.int64)
    kept = np.arange(raw)[None, :] < np.asarray(keep)[:, None]
    mask = mask & kept
    out = []
    for run, length in ((mask, input_length), (~mask & kept, target_length)):  # replaced by sentinels
        starts = run & ~_shift_right(run)
        values = np.where(starts, sentinels[np.clip(np.cumsum(starts, axis=1) - 1, 0, None)], tokens)
        chosen = kept & (~run | starts)
        seq = np.full((rows, length), pad_id, tokens.dtype)
        row, col = np.nonzero(chosen)
        seq[row, (np.cumsum(chosen, axis=1) - 1)[row, col]] = values[row, col]
        seq[np.arange(rows), chosen.sum(axis=1)] = eos_id
        out.append(seq)
    return out[0], out[1]


def _shift_right(a: np.ndarray) -> np.ndarray:
    """``a[:, i - 1]`` at ``i`` (False at 0)."""
    return np.pad(a, ((0, 0), (1, 0)))[:, :-1]


def salient_noise_mask(
    flags: np.ndarray, input_length: int, target_length: int, num_sentinels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noise mask ``[rows, raw]`` of the salient runs of ``flags`` and the kept length ``[rows]`` per row.

    The mask is False from ``keep`` on. A row whose mask is empty (no salient token, or none that fits)
    has no salient span: the caller gives it T5's random spans instead.
    """
    flags = np.asarray(flags, bool)
    rows, raw = flags.shape
    mask = flags & ~np.cumprod(flags, axis=1).astype(bool)  # a run at position 0 is not masked
    starts = mask & ~_shift_right(mask)
    span_index = np.cumsum(starts, axis=1) - 1
    # spans kept in order while the targets fit, counting the trailing non-noise run's sentinel
    ends = mask & ~np.pad(mask, ((0, 0), (0, 1)))[:, 1:]
    noise = np.cumsum(mask, axis=1)
    fits = (noise + span_index + 3 <= target_length) & (span_index + 2 <= num_sentinels)
    kept = np.count_nonzero(ends & fits, axis=1)  # a prefix of the spans: fits only falls along the row
    mask &= span_index < kept[:, None]
    starts &= mask
    # the longest prefix tokens[:L] (not cutting inside a span) whose corrupted row fits
    noise = np.cumsum(mask, axis=1)  # [:, L - 1]: noise tokens in tokens[:L]
    spans = np.cumsum(starts, axis=1)
    length = np.arange(1, raw + 1)
    open_run = ~mask  # tokens[:L] ends with a non-noise run: one more sentinel in the targets
    sentinels = spans + open_run
    inside = mask & np.pad(mask, ((0, 0), (0, 1)))[:, 1:]  # L would cut inside a span
    ok = (
        ~inside
        & (length - noise + spans + 1 <= input_length)
        & (noise + sentinels + 1 <= target_length)
        & (sentinels <= num_sentinels)
    )
    keep = raw - np.argmax(ok[:, ::-1], axis=1)  # ok[:, 0] always holds (one non-noise token)
    mask &= length[None, :] <= keep[:, None]
    return mask, keep
