"""The prepared-data layout every later stage reads, and deterministic saving.

``<root>/pretrain`` and ``<root>/flan`` are Datasets; ``<root>/mmlu`` a DatasetDict of its splits;
``<root>/bbh`` a DatasetDict with one split per task; ``<root>/finetune/<task>`` a DatasetDict
(train / validation / test). With the embedded pretraining corpus, ``<root>/probe`` (a DatasetDict,
split test) holds the knowledge probe of the people its biographies describe: it means something
only for models pretrained on that corpus.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import pyarrow as pa

ROLES = ("pretrain", "flan", "mmlu", "bbh", "finetune")
PROBE = "probe"  # written with the embedded pretraining corpus only


# a table up to this size is hashed as one record batch, as it always was (the embedded suite's
# hashes, and so its state.json files, stay the same); a bigger one in batches of about this size, so
# that hashing holds one batch, not the whole table, in memory
HASH_BATCH_BYTES = 32 << 20  # 4x the largest table of the embedded suite (tokenized flan, 7.5 MB)


class _HashSink:
    """A write-only file for pyarrow that feeds sha256 and keeps nothing."""

    closed = False

    def __init__(self):
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return len(data)

    def flush(self) -> None:
        pass


def _hash_batches(table: pa.Table):
    """The record batches ``content_hash`` writes: the whole table combined into one when it is at
    most ``HASH_BATCH_BYTES``; else its own batches, consecutive ones combined up to that size."""
    if table.nbytes <= HASH_BATCH_BYTES:
        yield from table.combine_chunks().to_batches()
        return
    group, size = [], 0
    for batch in table.to_batches():
        if group and size + batch.nbytes > HASH_BATCH_BYTES:
            yield pa.Table.from_batches(group).combine_chunks().to_batches()[0]
            group, size = [], 0
        group.append(batch)
        size += batch.nbytes
    if group:
        yield pa.Table.from_batches(group).combine_chunks().to_batches()[0]


def content_hash(ds: datasets.Dataset) -> str:
    """sha256 of a dataset's rows and schema (Arrow IPC stream bytes, ``_hash_batches``): equal data,
    equal hash; the memory it needs is bounded by ``HASH_BATCH_BYTES``, not by the data."""
    if ds._indices is not None:
        ds = ds.flatten_indices()
    table = ds.data.table
    sink = _HashSink()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in _hash_batches(table):
            writer.write_batch(batch)
    return sink.sha.hexdigest()


def content_hash_in_memory(ds: datasets.Dataset) -> str:
    """``content_hash`` as it was: the whole table, and its IPC bytes, in memory (tests compare)."""
    if ds._indices is not None:
        ds = ds.flatten_indices()
    sink = pa.BufferOutputStream()
    table = ds.data.table.combine_chunks()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _deterministic(ds: datasets.Dataset) -> datasets.Dataset:
    # datasets gives in-memory datasets a random fingerprint, which lands in state.json and would
    # change DVC's hash of identical data: use the content hash instead
    ds = ds.flatten_indices() if ds._indices is not None else ds
    ds._fingerprint = content_hash(ds)[:16]
    return ds


def save(obj, path: Path) -> None:
    """``save_to_disk`` of a Dataset, a DatasetDict or ``{task: DatasetDict}``, byte-deterministic."""
    path = Path(path)
    if isinstance(obj, datasets.Dataset):
        _deterministic(obj).save_to_disk(str(path))
    elif isinstance(obj, datasets.DatasetDict):
        datasets.DatasetDict({k: _deterministic(v) for k, v in obj.items()}).save_to_disk(str(path))
    elif isinstance(obj, dict):
        for task in sorted(obj):
            save(obj[task], path / task)
    else:
        raise TypeError(f"cannot save {type(obj).__name__} at {path}")


def load(root: Path, role: str):
    """Read one role back: Dataset, DatasetDict, or ``{task: DatasetDict}`` for finetune."""
    root = Path(root)
    if role == "finetune":
        return {
            p.name: datasets.load_from_disk(str(p)) for p in sorted((root / role).iterdir()) if p.is_dir()
        }
    return datasets.load_from_disk(str(root / role))


def summarize(obj, prefix: str) -> dict[str, int]:
    """Row counts as flat metrics: ``{"<prefix>.<split>.rows": n}``."""
    if isinstance(obj, datasets.Dataset):
        return {f"{prefix}.rows": len(obj)}
    out: dict[str, int] = {}
    for key in sorted(obj):
        out.update(summarize(obj[key], f"{prefix}.{key}"))
    return out
