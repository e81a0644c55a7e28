"""Training batches: seeded, resumable samplers over tokenized datasets (``flanmoe.data.tokenize``).

One optimizer step consumes one *global* batch, split into ``groups = world_size * grad_accum``
micro-batches; rank ``r``, micro-step ``m`` takes ``sampler.next(groups)[r * grad_accum + m]``. The
order depends only on ``(seed, epoch)`` (``numpy.random.default_rng([seed, epoch])``), never on the
world size, and the position (``state_dict``: epoch, index) is global, so a run resumes at another
world size.

- ``PackedBatches``: fixed-length span-corrupted pretraining rows, ``batch_size`` rows per global batch.
- ``TokenBudgetBatches``: variable-length (inputs, targets) pairs, micro-batches formed by length
  under a padded-token budget (bucketed: sort shuffled windows by length, cut, shuffle the groups).
- ``split_validation`` (held-out rows), ``eval_batches`` (a whole validation set in a fixed order),
  ``estimate_pad_fraction``.

Pad id 0 occurs only as padding (text is encoded with ``encode_special_tokens``), so
``attention_mask = input_ids != 0`` and labels equal to 0 become -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from flanmoe.data.tokenizer import PAD_ID
from flanmoe.model.transformer import IGNORE_INDEX

if TYPE_CHECKING:  # at run time only their methods are called: no import of datasets here
    import datasets

_VAL_STREAM = 2**32 - 1  # rng stream of split_validation: no epoch number reaches it


@dataclass
class Batch:
    """One micro-batch. Token counts are Python ints (no device sync to log them).

    ``padded_*_tokens`` count pad positions, so pad fraction = padded / (num + padded).
    """

    input_ids: Tensor  # [B, S] int64
    attention_mask: Tensor  # [B, S] bool, False at padding
    labels: Tensor  # [B, T] int64, -100 at padding
    num_input_tokens: int  # real (non-pad) encoder tokens
    num_target_tokens: int  # labels that count in the loss
    padded_input_tokens: int  # pad positions in input_ids
    padded_target_tokens: int  # pad positions in labels

    @classmethod
    def from_arrays(cls, inputs: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> Batch:
        """From pad-0 id matrices ``inputs`` [B, S] and ``labels`` [B, T]."""
        x, y = torch.as_tensor(inputs).long(), torch.as_tensor(labels).long()
        mask, keep = x != PAD_ID, y != PAD_ID
        n_in, n_tg = int(mask.sum()), int(keep.sum())
        return cls(
            x, mask, y.masked_fill(~keep, IGNORE_INDEX), n_in, n_tg, x.numel() - n_in, y.numel() - n_tg
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def pad_fraction(self) -> float:
        padded = self.padded_input_tokens + self.padded_target_tokens
        return padded / max(1, padded + self.num_input_tokens + self.num_target_tokens)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with its tensors on ``device``."""
        move = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in _TENSORS}
        return Batch(**move, **{k: getattr(self, k) for k in _COUNTS})


_TENSORS = ("input_ids", "attention_mask", "labels")
_COUNTS = ("num_input_tokens", "num_target_tokens", "padded_input_tokens", "padded_target_tokens")


class _Column:
    """A list-of-int column read in place: the values stay in their Arrow chunks (memory-mapped when
    the dataset was loaded from disk, so nothing the size of the data is copied into RAM); per row
    ``lengths`` [N], the ``chunk`` holding it [N] and its ``starts`` in that chunk's flat values [N].

    ``rows`` (an indices mapping, e.g. ``Dataset.select``): row i is row ``rows[i]`` of ``col``."""

    def __init__(self, col: pa.ChunkedArray, rows: np.ndarray | None = None):
        self.fixed = pa.types.is_fixed_size_list(col.type)  # packed rows: one length for all
        chunks = [c for c in col.chunks if len(c)]
        # flatten() honours slices; int32 without nulls: a view of the Arrow buffer, no copy (Linux
        # keeps a memory-mapped file readable when a stage replaces it: rename, not rewrite)
        self.values = [c.flatten().to_numpy(zero_copy_only=False) for c in chunks]
        per_chunk = [pc.list_value_length(c).to_numpy(zero_copy_only=False).astype(np.int64) for c in chunks]
        lengths = np.concatenate(per_chunk) if chunks else np.zeros(0, np.int64)
        starts = np.concatenate([np.cumsum(n) - n for n in per_chunk]) if chunks else lengths
        chunk = np.repeat(np.arange(len(chunks), dtype=np.int32), [len(n) for n in per_chunk])
        if rows is not None:
            lengths, starts, chunk = lengths[rows], starts[rows], chunk[rows]
        self.lengths, self.starts, self.chunk = lengths, starts, chunk

    def __len__(self) -> int:
        return len(self.lengths)

    def pad(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` right-padded with 0 to their longest: [len(rows), max length] int32."""
        rows = np.asarray(rows, np.int64)
        lengths = self.lengths[rows]
        out = np.zeros((len(rows), int(lengths.max(initial=0))), np.int32)
        if len(self.values) == 1 and len(self.values[0]):  # one chunk (built in memory): one gather
            values, pos = self.values[0], np.arange(out.shape[1])
            idx = np.minimum(self.starts[rows, None] + pos, len(values) - 1)  # clamped: masked below
            return np.where(pos < lengths[:, None], values[idx], PAD_ID).astype(np.int32, copy=False)
        # rows spread over chunks (memory-mapped record batches): row by row, as fast as one
        # vectorized gather per chunk at a batch's size, and nothing but the rows is read
        for i, (k, start, n) in enumerate(
            zip(self.chunk[rows].tolist(), self.starts[rows].tolist(), lengths.tolist(), strict=True)
        ):
            out[i, :n] = self.values[k][start : start + n]
        return out


def _columns(ds: datasets.Dataset) -> tuple[_Column, _Column]:
    """``input_ids`` and ``labels`` read in place from the dataset's Arrow table (an indices mapping
    is kept as row numbers, not applied by copying the rows)."""
    table = ds.data.table
    rows = None if ds._indices is None else ds._indices.column(0).to_numpy()
    return _Column(table.column("input_ids"), rows), _Column(table.column("labels"), rows)


def _is_packed(inputs: _Column, labels: _Column) -> bool:
    """Fixed-length rows (an Arrow fixed-size list, or lists that all have one length)."""
    if inputs.fixed and labels.fixed:
        return True
    return len(np.unique(inputs.lengths)) <= 1 and len(np.unique(labels.lengths)) <= 1


def _batches(inputs: _Column, labels: _Column, rows: list[np.ndarray]) -> list[Batch]:
    return [Batch.from_arrays(inputs.pad(r), labels.pad(r)) for r in rows]


class _Sampler:
    """Shared position logic: ``epoch`` and ``index`` (global batch or group index within the epoch)."""

    epoch: int
    index: int

    def _epoch_groups(self, epoch: int) -> list[np.ndarray]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, int]:
        """The global position: ``{"epoch", "index"}`` (plain ints, world-size independent)."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the sampler that saved ``state`` stopped."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        if self.epoch < 0 or self.index < 0:
            raise ValueError(f"sampler state: negative position {state}")


class PackedBatches(_Sampler):
    """Global batches of ``batch_size`` fixed-length rows; each epoch a seeded permutation of all rows
    (the incomplete last batch dropped), epochs forever.

    ``next(groups)`` -> the ``groups`` micro-batches of the next global batch, each ``input_ids``
    [batch_size // groups, input_length], ``labels`` [batch_size // groups, target_length].
    """

    def __init__(self, ds: datasets.Dataset, batch_size: int, seed: int):
        if not 1 <= batch_size <= len(ds):
            raise ValueError(f"batch_size: {batch_size} must be in [1, {len(ds)}] (the dataset's rows)")
        self.inputs, self.labels = _columns(ds)
        self.batch_size, self.seed = batch_size, seed
        self.batches_per_epoch = len(ds) // batch_size
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _epoch_groups(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches: ``batches_per_epoch`` row-index arrays [batch_size]."""
        if self._cache is None or self._cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.inputs))
            n = self.batches_per_epoch * self.batch_size
            self._cache = (epoch, np.split(perm[:n], self.batches_per_epoch))
        return self._cache[1]

    def next(self, groups: int) -> list[Batch]:
        """The next global batch as ``groups`` equal micro-batches (concatenated: the global batch)."""
        if groups < 1 or self.batch_size % groups:
            raise ValueError(f"batch_size: {self.batch_size} is not divisible by groups = {groups}")
        rows = self._epoch_groups(self.epoch)[self.index]
        self.index += 1
        if self.index == self.batches_per_epoch:  # keep the state canonical: (next epoch, 0)
            self.epoch, self.index = self.epoch + 1, 0
        x, y = torch.from_numpy(self.inputs.pad(rows)), torch.from_numpy(self.labels.pad(rows))
        per = self.batch_size // groups
        return [
            Batch.from_arrays(x[g * per : (g + 1) * per], y[g * per : (g + 1) * per]) for g in range(groups)
        ]

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.index >= self.batches_per_epoch:
            raise ValueError(
                f"sampler state: index {self.index} >= {self.batches_per_epoch} batches per epoch"
            )


def _cut(order: np.ndarray, inputs: _Column, labels: _Column, max_tokens: int, max_examples: int) -> list:
    """Cut ``order`` greedily into groups with ``B * (max input + max target length) <= max_tokens``
    and ``B <= max_examples`` (an example over the budget alone forms its own group)."""
    li, lt = inputs.lengths[order].tolist(), labels.lengths[order].tolist()
    groups, start, mi, mt = [], 0, 0, 0
    for k in range(len(order)):
        a, b = max(mi, li[k]), max(mt, lt[k])
        n = k - start + 1
        if n > 1 and (n * (a + b) > max_tokens or n > max_examples):
            groups.append(order[start:k])
            start, a, b = k, li[k], lt[k]
        mi, mt = a, b
    if start < len(order):
        groups.append(order[start:])
    return groups


class TokenBudgetBatches(_Sampler):
    """Variable-length (inputs, targets) pairs in micro-batches ("groups") under a padded-token budget:
    each group's ``B * (max input length + max target length) <= max_tokens``, ``B <= max_examples``.

    Per epoch: seeded shuffle; sort windows of ``bucket_size * (typical examples per group)`` shuffled
    examples by length; cut groups greedily; shuffle the groups. ``bucket_size=0``: no sorting (plain
    random batching, for comparison). A global batch is ``groups`` consecutive groups; the groups left
    at the end of an epoch that do not fill one are dropped. ``oversized``: examples over the budget
    alone (each forms its own group).
    """

    def __init__(
        self,
        ds: datasets.Dataset,
        max_tokens: int,
        seed: int,
        bucket_size: int = 100,
        max_examples: int | None = None,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens: {max_tokens} must be >= 1")
        if len(ds) == 0:
            raise ValueError("max_tokens: no examples to batch (empty dataset)")
        if bucket_size < 0 or (max_examples is not None and max_examples < 1):
            raise ValueError(f"bucket_size {bucket_size} must be >= 0 and max_examples {max_examples} >= 1")
        self.inputs, self.labels = _columns(ds)
        self.max_tokens, self.seed, self.bucket_size = max_tokens, seed, bucket_size
        self.max_examples = max_examples or max_tokens
        total = self.inputs.lengths + self.labels.lengths
        self.oversized = int((total > max_tokens).sum())
        per_group = min(self.max_examples, max(1, max_tokens // max(1, int(total.mean()))))
        self.window = bucket_size * per_group if bucket_size else len(ds)
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _epoch_groups(self, epoch: int) -> list[np.ndarray]:
        """The epoch's groups, in order: row-index arrays."""
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.inputs))
            groups = []
            for w in range(0, len(order), self.window):
                idx = order[w : w + self.window]
                if self.bucket_size:  # by input length, then target length (lexsort: last key first)
                    idx = idx[np.lexsort((self.labels.lengths[idx], self.inputs.lengths[idx]))]
                groups += _cut(idx, self.inputs, self.labels, self.max_tokens, self.max_examples)
            self._cache = (epoch, [groups[i] for i in rng.permutation(len(groups))])
        return self._cache[1]

    def groups_per_epoch(self, epoch: int | None = None) -> int:
        """Micro-batches in ``epoch`` (default: the current one), before dropping the tail."""
        return len(self._epoch_groups(self.epoch if epoch is None else epoch))

    def next(self, groups: int) -> list[Batch]:
        """The next ``groups`` consecutive micro-batches (one global batch); each its own shape,
        ``input_ids`` [B_g, longest input of the group], ``labels`` [B_g, longest target]."""
        if groups < 1:
            raise ValueError(f"groups: {groups} must be >= 1")
        epoch, index = self.epoch, self.index
        if index + groups > self.groups_per_epoch(epoch):  # the tail does not fill a global batch
            epoch, index = epoch + 1, 0
        epoch_groups = self._epoch_groups(epoch)
        if groups > len(epoch_groups):  # checked before moving: a failed call leaves the state alone
            raise ValueError(
                f"max_tokens: epoch {epoch} has {len(epoch_groups)} micro-batches of {self.max_tokens} "
                f"tokens, fewer than groups = {groups}; lower max_tokens or world_size x grad_accum"
            )
        self.epoch, self.index = epoch, index + groups
        return _batches(self.inputs, self.labels, epoch_groups[index : index + groups])


def estimate_pad_fraction(sampler: PackedBatches | TokenBudgetBatches, n_groups: int = 200) -> float:
    """Pad positions / all positions (inputs and labels) over the first ``n_groups`` groups of the
    sampler's current epoch (global batches for ``PackedBatches``); the sampler does not advance."""
    padded = total = 0
    for rows in sampler._epoch_groups(sampler.epoch)[:n_groups]:
        for col in (sampler.inputs, sampler.labels):
            x = col.pad(rows)
            padded += int((x == PAD_ID).sum())
            total += x.size
    return padded / max(1, total)


def split_validation(ds: datasets.Dataset, n: int, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, val): ``val`` is the last ``n`` rows of a seeded permutation, ``train`` the rest; both keep
    the dataset's row order. Deterministic from ``seed``."""
    if not 1 <= n < len(ds):
        raise ValueError(f"val_examples: {n} must be in [1, {len(ds)}) (the dataset has {len(ds)} rows)")
    perm = np.random.default_rng([seed, _VAL_STREAM]).permutation(len(ds))
    return ds.select(np.sort(perm[:-n])), ds.select(np.sort(perm[-n:]))


def eval_batches(
    ds: datasets.Dataset, batch_size: int | None = None, max_tokens: int | None = None
) -> list[Batch]:
    """All of a (small) validation set, each row once, in a fixed order (no shuffle).

    Packed (fixed-length) rows: in dataset order, ``batch_size`` per batch (default: as many as fit
    ``max_tokens``). Pairs: sorted by length (least padding; loss sums do not depend on order), cut
    under ``max_tokens`` (``batch_size``, if given, caps the rows per batch).
    """
    inputs, labels = _columns(ds)
    if _is_packed(inputs, labels):
        if batch_size is None:
            if max_tokens is None:
                raise ValueError("batch_size: packed data needs batch_size (or max_tokens)")
            width = int(inputs.lengths.max(initial=1) + labels.lengths.max(initial=0))
            batch_size = max(1, max_tokens // width)
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} must be >= 1")
        rows = np.arange(len(ds))
        return _batches(inputs, labels, [rows[i : i + batch_size] for i in range(0, len(ds), batch_size)])
    if max_tokens is None or max_tokens < 1:
        raise ValueError(f"max_tokens: variable-length pairs need a token budget >= 1 (got {max_tokens})")
    order = np.lexsort((labels.lengths, inputs.lengths))
    return _batches(inputs, labels, _cut(order, inputs, labels, max_tokens, batch_size or max_tokens))
