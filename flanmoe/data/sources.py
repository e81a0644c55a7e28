"""Data sources: the real schemas, and one loader for hub ids and local files alike.

A source is described by a ``SourceSpec`` (a params.yaml entry). ``kind: hub`` and ``kind: local`` go
through the same ``datasets.load_dataset`` calls: a hub id and a local directory laid out like a hub
dataset repo (a README.md with ``configs:``, or ``<config>/<split>-*.parquet`` files) are the same
thing to ``datasets``; a single local file is loaded with the json/parquet/csv builder. ``path`` may
hold ``{config}`` and ``{split}`` placeholders to name one file per task and split, as the real BBH
repository ships (``bbh/boolean_expressions.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from flanmoe.data.config import SourceKind, SourceSpec  # noqa: F401 (re-exported: params live there)

# role -> (required columns, the split names it may have)
SCHEMAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # C4 (allenai/c4): text, timestamp, url. Only `text` is needed to pretrain.
    "pretrain": (("text",), ("train",)),
    # FLAN collection (DataProvenanceInitiative/flan2021_submix_original and kin).
    "flan": (("inputs", "targets", "task_source", "task_name", "template_type"), ("train",)),
    # MMLU (cais/mmlu): 4 choices, answer is an int 0-3.
    "mmlu": (("question", "subject", "choices", "answer"), ("dev", "validation", "test")),
    # BBH (lukaemon/bbh): one config per task, split test.
    "bbh": (("input", "target"), ("test",)),
    # single-task fine-tuning sets, FLAN-like pairs: one config per task.
    "finetune": (("inputs", "targets"), ("train", "validation", "test")),
}
# splits a source must provide (others listed in SCHEMAS are optional)
REQUIRED_SPLITS = {
    "pretrain": ("train",),
    "flan": ("train",),
    "mmlu": ("test",),
    "bbh": ("test",),
    "finetune": ("train", "test"),
}

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class SourceError(ValueError):
    """A source cannot be read: names the source, and the file or column at fault."""


def _builder_for(path: str) -> str | None:
    return _FILE_BUILDERS.get(Path(path).suffix.lower())


def _load_split(
    spec: SourceSpec, role: str, split: str, config: str | None, optional: bool
) -> datasets.Dataset | None:
    """One split of one config; None when an optional split is absent."""
    name = config if config is not None else spec.name
    path = spec.path.format(config=config or "", split=split) if spec.path else ""
    builder = _builder_for(path) if spec.kind == "local" else None
    if spec.kind == "local":
        p = Path(path)
        if not p.exists():
            if optional and "{split}" in (spec.path or ""):
                return None
            raise SourceError(f"source '{role}': file not found: {p}")
        if p.is_file() and p.stat().st_size == 0:
            raise SourceError(f"source '{role}': {p}: file is empty")
        if builder is None and not p.is_dir():
            raise SourceError(
                f"source '{role}': {p}: unsupported file type "
                f"(use {', '.join(sorted(_FILE_BUILDERS))} or a dataset directory)"
            )
    try:
        if builder is not None:
            kwargs = {"field": spec.field} if spec.field and builder == "json" else {}
            # a file holds one split: name it after the split we asked for
            return datasets.load_dataset(builder, data_files={split: path}, split=split, **kwargs)
        return datasets.load_dataset(path, name=name, split=split, revision=spec.revision)
    except ValueError as e:  # datasets says "Unknown split" when a split is absent
        if optional and "split" in str(e).lower():
            return None
        raise SourceError(f"source '{role}' ({path}, config {name!r}, split {split!r}): {e}") from e
    except FileNotFoundError as e:
        raise SourceError(f"source '{role}': not found: {path} ({e})") from e
    except Exception as e:  # the hub offline, a corrupt file: name what failed
        if builder == "json" and spec.field and (why := _field_problem(Path(path), spec.field)):
            raise SourceError(f"source '{role}': {path}: {why} (prepare.{role}.field)") from e
        hint = (
            (
                " (the project runs offline: HF_HUB_OFFLINE=0 to reach the hub, or point `path` at a "
                "local copy)"
            )
            if "offline" in str(e).lower()
            else ""
        )
        raise SourceError(
            f"source '{role}' ({path}, config {name!r}, split {split!r}): {type(e).__name__}: {e}{hint}"
        ) from e


def _field_problem(path: Path, field: str) -> str | None:
    """Why the JSON file ``path`` holds no list of records under ``field`` (None if it does, or if it
    is no single JSON document: then the loader's own error says more)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict):
        return f"is a JSON {type(obj).__name__}, not an object with the field {field!r}"
    if field not in obj:
        return f"has no field {field!r} (its keys: {', '.join(map(repr, obj))})"
    if not isinstance(obj[field], list):
        return f"field {field!r} holds a {type(obj[field]).__name__}, not a list of records"
    return None


def check_columns(ds: datasets.Dataset, role: str, where: str) -> None:
    """Raise ``SourceError`` naming the source and the first missing required column."""
    required, _ = SCHEMAS[role]
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise SourceError(
            f"source '{role}' ({where}): missing required column '{missing[0]}' "
            f"(has: {', '.join(ds.column_names)})"
        )


def cap(ds: datasets.Dataset, max_examples: int | None, seed: int) -> datasets.Dataset:
    """At most ``max_examples`` rows, a seeded sample so that a cap keeps the mix of the source."""
    if max_examples is None or len(ds) <= max_examples:
        return ds
    return ds.shuffle(seed=seed).select(range(max_examples)).flatten_indices()


def checked(
    ds: datasets.Dataset, role: str, where: str, max_examples: int | None, seed: int
) -> datasets.Dataset:
    """Any source's split, the embedded suite's too: required columns present, not empty, capped."""
    check_columns(ds, role, where)
    if len(ds) == 0:  # datasets cannot load back an empty saved split; and it is surely a mistake
        raise SourceError(f"source '{role}' ({where}): no rows")
    return cap(ds, max_examples, seed)


def _finish(
    ds: datasets.Dataset, role: str, where: str, spec: SourceSpec, seed: int, task: str | None = None
) -> datasets.Dataset:
    """``checked``, then only the schema's columns (finetune: plus ``task_name``, from the config)."""
    ds = checked(ds, role, where, spec.max_examples, seed)
    keep = list(SCHEMAS[role][0])
    if role == "finetune" and "task_name" in ds.column_names:
        keep.append("task_name")
    ds = ds.select_columns(keep)
    if role == "finetune" and "task_name" not in ds.column_names:
        ds = ds.add_column("task_name", [task] * len(ds))
    return ds


def load_source(role: str, spec: SourceSpec, seed: int):
    """Load a hub or local source for ``role``, check its schema, apply the cap.

    Returns a ``Dataset`` (pretrain, flan), a ``DatasetDict`` (mmlu: its splits; bbh: one split per
    task), or ``dict[task, DatasetDict]`` (finetune).
    """
    if spec.kind == "embedded":
        raise ValueError("embedded sources come from flanmoe.data.embedded.build_suite")
    _, splits = SCHEMAS[role]
    if role in ("pretrain", "flan"):
        split = spec.split or "train"
        ds = _load_split(spec, role, split, None, optional=False)
        return _finish(ds, role, f"{spec.path} split {split}", spec, seed)
    if role == "mmlu":
        out = {}
        for split in splits:
            ds = _load_split(spec, role, split, None, optional=split not in REQUIRED_SPLITS[role])
            if ds is not None:
                out[split] = _finish(ds, role, f"{spec.path} split {split}", spec, seed)
        return datasets.DatasetDict(out)
    if not spec.configs:
        raise SourceError(f"source '{role}': list its tasks under `configs`")
    if role == "bbh":
        return datasets.DatasetDict(
            {
                task: _finish(
                    _load_split(spec, role, "test", task, optional=False),
                    role,
                    f"{spec.path} config {task}",
                    spec,
                    seed,
                )
                for task in spec.configs
            }
        )
    out = {}
    for task in spec.configs:  # finetune
        parts = {}
        for split in splits:
            ds = _load_split(spec, role, split, task, optional=split not in REQUIRED_SPLITS[role])
            if ds is not None:
                parts[split] = _finish(
                    ds, role, f"{spec.path} config {task} split {split}", spec, seed, task=task
                )
        out[task] = datasets.DatasetDict(parts)
    return out
