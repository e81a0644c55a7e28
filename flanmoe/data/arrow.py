"""Read what ``datasets.Dataset.save_to_disk`` wrote with pyarrow alone, memory-mapped.

The evaluate stage only reads the tokenize stage's outputs row by row or column by column; going
through ``datasets`` would cost it ``import datasets`` (~0.7 s of a 2-core stage's start-up) for no
work. ``load_from_disk`` reads a saved ``Dataset`` (``state.json`` + Arrow stream files) as ``Rows`` and
a saved ``DatasetDict`` (``dataset_dict.json``) as a dict of them; the values are the ones ``datasets``
returns (tested against it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa


class Rows:
    """The rows of one saved split: ``len(rows)``, iteration (dicts), ``rows["column"]`` (a list),
    ``rows[i]`` (a dict), ``column_names`` and ``select(indices)``, as ``datasets.Dataset`` has them."""

    def __init__(self, table: pa.Table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[dict]:
        return iter(self.table.to_pylist())

    def __getitem__(self, key: str | int):
        if isinstance(key, str):
            return self.table.column(key).to_pylist()
        return self.table.slice(key, 1).to_pylist()[0]

    @property
    def column_names(self) -> list[str]:
        return self.table.column_names

    def select(self, indices: Iterable[int]) -> Rows:
        """The rows at ``indices``, in that order."""
        return Rows(self.table.take(pa.array(list(indices), pa.int64())))


def load_from_disk(path: str | Path) -> Rows | dict[str, Rows]:
    """``datasets.load_from_disk(path)``, as ``Rows`` (a dict of them for a saved ``DatasetDict``)."""
    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return {split: _load_split(path / split) for split in splits}
    return _load_split(path)


def _load_split(path: Path) -> Rows:
    state = json.loads((path / "state.json").read_text())
    if state.get("_indices_data_files"):  # save_to_disk flattens indices; a layout we do not read
        raise ValueError(f"{path}: a saved dataset with an indices mapping (not written by save_to_disk)")
    tables = [
        pa.ipc.open_stream(pa.memory_map(str(path / f["filename"]))).read_all() for f in state["_data_files"]
    ]
    return Rows(pa.concat_tables(tables) if len(tables) != 1 else tables[0])
