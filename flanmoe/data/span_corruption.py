"""T5 span corruption (Raffel et al. 2020), ported from ``t5.data.preprocessors`` to numpy.

- ``random_spans_noise_mask``: same algorithm as T5's: ``round(length * density)`` noise tokens in
  ``round(noise / mean_span)`` spans; noise and non-noise runs are random segmentations, interleaved
  starting with non-noise.
- ``span_corrupt``: inputs keep the non-noise tokens with each noise span replaced by the next
  sentinel; targets hold each noise span preceded by its sentinel (T5's
  ``noise_span_to_unique_sentinel`` / ``nonnoise_span_to_unique_sentinel``); both end with eos.
  ``sentinel_ids[k]`` is the id of ``<extra_id_k>``, wherever the tokenizer puts it (ours: 3, 4, ...;
  HF T5: 32099, 32098, ...; ``flanmoe.data.tokenizer.sentinel_ids``).
- ``span_uncorrupt`` inverts it (tests); ``random_spans_helper`` picks the raw chunk length so that
  the corrupted inputs are exactly ``input_length`` long and the targets fit ``target_length``.

Randomness comes only from the ``np.random.Generator`` passed in: seed it per example/block from
(seed, index) and the output does not depend on batch sizes or process counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUR_SENTINEL_IDS = range(3, 103)  # <extra_id_0..99> of a tokenizer we train (flanmoe.data.tokenizer)


def noise_span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) for a sequence of ``length`` tokens, as T5 computes them.

    Degenerate cases are clamped as in T5 (at least one noise and one non-noise token, at least one
    span); spans are also capped at the non-noise count so every span has a non-noise run before it.
    """
    length = max(length, 2)  # T5: "increase length to avoid degeneracy"
    num_noise = min(max(int(np.round(length * noise_density)), 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)
    return num_noise, min(num_spans, length - num_noise, num_noise)


def _random_segmentation(
    num_items: int, num_segments: int, batch: int, rng: np.random.Generator
) -> np.ndarray:
    """Lengths ``[batch, num_segments]`` of a uniformly random split of ``num_items`` into non-empty runs."""
    # a random (num_segments - 1)-subset of the num_items - 1 gaps starts a new segment
    gaps = np.argsort(rng.random((batch, num_items - 1)), axis=1)[:, : num_segments - 1] + 1
    bounds = np.concatenate(
        [np.zeros((batch, 1), np.int64), np.sort(gaps, axis=1), np.full((batch, 1), num_items)], axis=1
    )
    return np.diff(bounds, axis=1)


def random_spans_noise_mask(
    length: int,
    noise_density: float,
    rng: np.random.Generator,
    mean_noise_span_length: float = 3.0,
    batch: int | None = None,
) -> np.ndarray:
    """Boolean noise mask ``[length]`` (or ``[batch, length]``, one independent mask per row).

    Every row has the same number of noise tokens and spans (they depend only on ``length``), so
    corrupted rows of equal-length inputs all have equal lengths.
    """
    rows = 1 if batch is None else batch
    if noise_density == 0.0:
        mask = np.zeros((rows, length), bool)
        return mask[0] if batch is None else mask
    orig_length, length = length, max(length, 2)
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    noise_lens = _random_segmentation(num_noise, num_spans, rows, rng)
    nonnoise_lens = _random_segmentation(length - num_noise, num_spans, rows, rng)
    # interleave [nonnoise_0, noise_0, nonnoise_1, noise_1, ...]; each row sums to `length`
    run_lens = np.stack([nonnoise_lens, noise_lens], axis=2).reshape(rows, 2 * num_spans)
    run_flags = np.tile(np.array([False, True]), rows * num_spans)
    mask = np.repeat(run_flags, run_lens.ravel()).reshape(rows, length)[:, :orig_length]
    return mask[0] if batch is None else mask


def _replace_spans(tokens: np.ndarray, spans: np.ndarray, sentinel_ids: np.ndarray) -> np.ndarray:
    """Replace each run of ``spans`` (per row) by one sentinel: run k of a row by ``sentinel_ids[k]``.

    Args: ``tokens``, ``spans``: ``[batch, length]``. Returns a flat array of the kept values,
    row-major (rows may have different lengths in general; equal when span counts are equal).
    """
    starts = spans & ~np.pad(spans, ((0, 0), (1, 0)))[:, :-1]
    span_index = np.cumsum(starts, axis=1) - 1
    most = int(starts.sum(axis=1).max(initial=0))
    if most > len(sentinel_ids):
        raise ValueError(f"{most} noise spans in a row but only {len(sentinel_ids)} sentinels")
    values = np.where(starts, sentinel_ids[np.clip(span_index, 0, None)], tokens)
    return values[~spans | starts]


def span_corrupt_batch(
    tokens: np.ndarray,
    noise_mask: np.ndarray,
    sentinel_ids: Sequence[int],
    eos_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``[batch, length]`` tokens with a ``[batch, length]`` mask of equal counts per row.

    Returns ``(inputs [batch, nonnoise + spans + 1], targets [batch, noise + spans + 1])``, each
    row ending with eos. The k-th span of a row becomes ``sentinel_ids[k]`` (``<extra_id_k>``).
    """
    tokens = np.asarray(tokens)
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    batch = tokens.shape[0]
    eos = np.full((batch, 1), eos_id, dtype=tokens.dtype)
    inputs = _replace_spans(tokens, noise_mask, sentinels).reshape(batch, -1)
    # rows start with non-noise, so non-noise run k is replaced by sentinel k right before noise span k
    targets = _replace_spans(tokens, ~noise_mask, sentinels).reshape(batch, -1)
    return np.concatenate([inputs, eos], axis=1), np.concatenate([targets, eos], axis=1)


def span_corrupt(
    tokens: np.ndarray | list[int],
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    sentinel_ids: Sequence[int] = OUR_SENTINEL_IDS,
    eos_id: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """T5 span corruption of one sequence ``[length]`` (no eos in it) -> ``(inputs, targets)``.

    ``inputs``: non-noise tokens with noise span k replaced by ``sentinel_ids[k]``, then eos.
    ``targets``: ``sentinel_ids[k]`` followed by noise span k, for k = 0, 1, ..., then eos.
    """
    tokens = np.asarray(tokens)[None, :]
    if tokens.shape[1] < 2:
        raise ValueError(f"span_corrupt needs at least 2 tokens, got {tokens.shape[1]}")
    mask = random_spans_noise_mask(tokens.shape[1], noise_density, rng, mean_noise_span_length, batch=1)
    inputs, targets = span_corrupt_batch(tokens, mask, sentinel_ids, eos_id)
    return inputs[0], targets[0]


def span_uncorrupt(
    inputs: np.ndarray | list[int],
    targets: np.ndarray | list[int],
    sentinel_ids: Sequence[int] = OUR_SENTINEL_IDS,
    eos_id: int = 1,
    pad_id: int = 0,
) -> list[int]:
    """Inverse of ``span_corrupt``: put each target span back in place of its sentinel.

    Padding and the trailing eos of both sides are removed first. A last target sentinel with no span
    and no input sentinel (``span_corrupt_batch`` of a mask ending with non-noise) is accepted. Raises
    ``ValueError`` if the sentinels are not 0, 1, 2, ... in order on both sides.
    """

    def strip(seq: np.ndarray | list[int]) -> list[int]:
        seq = [int(t) for t in seq if t != pad_id]
        if not seq or seq[-1] != eos_id:
            raise ValueError("sequence does not end with eos")
        return seq[:-1]

    index = {int(t): k for k, t in enumerate(sentinel_ids)}  # sentinel id -> k of <extra_id_k>

    spans: list[list[int]] = []
    for t in strip(targets):
        if t in index:
            if index[t] != len(spans):
                raise ValueError(f"target sentinel {index[t]} out of order")
            spans.append([])
        elif not spans:
            raise ValueError("targets do not start with a sentinel")
        else:
            spans[-1].append(t)
    out: list[int] = []
    seen = 0
    for t in strip(inputs):
        if t in index:
            if index[t] != seen or seen >= len(spans):
                raise ValueError(f"input sentinel {index[t]} out of order or without target")
            out.extend(spans[seen])
            seen += 1
        else:
            out.append(t)
    if seen == len(spans) - 1 and not spans[-1]:
        spans.pop()  # the sentinel of a trailing non-noise run (a row ending with text: salient masks)
    if seen != len(spans):
        raise ValueError(f"{len(spans)} target spans but {seen} input sentinels")
    return out


def corrupted_lengths(
    tokens_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """(inputs_length, targets_length) after corrupting ``tokens_length`` tokens, eos included."""
    num_noise, num_spans = noise_span_counts(tokens_length, noise_density, mean_noise_span_length)
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def random_spans_helper(
    input_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """T5's ``random_spans_helper``: the raw ``tokens_length`` whose corrupted inputs fill ``input_length``.

    Returns ``(tokens_length, targets_length)``: the largest raw chunk length whose inputs (with one
    sentinel per span and eos) are at most ``input_length``, and the resulting targets length.
    """
    if input_length < 3:
        raise ValueError(f"input_length: must be >= 3, got {input_length}")
    tokens_length = input_length - 1
    while corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= input_length:
        tokens_length += 1
    inputs_len, targets_length = corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)
    if noise_density == 0.5 and targets_length > inputs_len:  # T5: keep targets <= the round input length
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length
