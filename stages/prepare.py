"""Stage `prepare`: every source of params.yaml `prepare` -> Arrow datasets under data/prepared/.

All sources are read and checked first; only then is anything written, into a temporary folder that
replaces data/prepared/ at the end. A missing file or column stops the stage (exit 2) with the source
and the file or column named.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flanmoe.atomic import atomic_dir, write_json
from flanmoe.data import prepared
from flanmoe.data.sources import SourceError, checked, load_source
from stages.common import disk_mb, fail, load_params, run_stage, tracked_run, without_timings
from stages.paths import METRICS, PREPARED, RAW

OUT = PREPARED


def _embedded_part(suite, role: str, max_examples: int | None, seed: int):
    """One role of the embedded suite, checked and capped like any other source."""
    import datasets

    def check(ds: datasets.Dataset, where: str) -> datasets.Dataset:
        return checked(ds, role, f"embedded {where}".strip(), max_examples, seed)

    obj = getattr(suite, role)
    if isinstance(obj, datasets.Dataset):  # pretrain, flan
        return check(obj, "")
    if role == "finetune":  # {task: DatasetDict}
        return {
            task: datasets.DatasetDict({s: check(ds, f"{task} {s}") for s, ds in dd.items()})
            for task, dd in obj.items()
        }
    # mmlu: its splits; bbh: one split per task
    return datasets.DatasetDict({k: check(ds, k) for k, ds in obj.items()})


def load_all(params) -> dict:
    """Read every source (the embedded suite is built once, if any source uses it); with the embedded
    pretraining corpus, also the knowledge probe of its people (``prepared.PROBE``)."""
    p, seed = params.prepare, params.base.seed
    suite = None
    if any(getattr(p, role).kind == "embedded" for role in prepared.ROLES):
        from flanmoe.data.embedded import build_suite

        suite = build_suite(p.embedded)
    data = {}
    for role in prepared.ROLES:
        spec = getattr(p, role)
        if spec.kind == "embedded":
            data[role] = _embedded_part(suite, role, spec.max_examples, seed)
        else:
            data[role] = load_source(role, spec, seed)
    if p.pretrain.kind == "embedded":
        data[prepared.PROBE] = suite.probe
    return data


def warn_untracked_paths(params) -> None:
    """A local source outside data/raw/ is no DVC dependency: say so (changes there rerun nothing)."""
    raw = RAW.resolve()
    for role in prepared.ROLES:
        spec = getattr(params.prepare, role)
        if spec.kind == "local":
            root = Path(spec.path.split("{")[0]).resolve()
            if raw != root and raw not in root.parents:
                print(
                    f"warning: prepare.{role}.path ({spec.path}) is outside data/raw/: "
                    "DVC will not rerun prepare when it changes",
                    file=sys.stderr,
                )


def local_source_roots(params) -> dict[Path, str]:
    """The files or directories the local sources read (``path`` up to its first ``{...}``), as
    dataset inputs of the run (path -> context)."""
    roots = {}
    for role in prepared.ROLES:
        spec = getattr(params.prepare, role)
        if spec.kind == "local":
            root = Path(spec.path.split("{")[0])
            roots[root if root.exists() else root.parent] = "source"
    return roots


def hub_datasets(params) -> list:
    """The hub sources, one per config read, as dataset references (by id, config, split, revision)."""
    from flanmoe.tracking_client import DatasetRef  # not flanmoe.tracking: that imports mlflow

    refs = []
    for role in prepared.ROLES:
        spec = getattr(params.prepare, role)
        if spec.kind == "hub":
            for config in spec.configs or [spec.name]:
                refs.append(
                    DatasetRef(name=spec.path, hub=spec.path, config=config, split=spec.split,
                               revision=spec.revision, context="source")
                )  # fmt: skip
    return refs


def _column_chunks(ds, column: str):
    """The Arrow chunks of one column, batch by batch (an indices mapping applied): never the whole
    column in memory at once."""
    for batch in ds.select_columns([column]).with_format("arrow").iter(batch_size=10_000):
        yield batch.column(column)


def corpus_metrics(role: str, ds) -> dict:
    """pretrain: ``pretrain.text_mb`` (UTF-8 bytes), ``pretrain.salient_values`` (embedded corpus
    only); flan: ``flan.tasks``. Read column chunk by column chunk."""
    import pyarrow.compute as pc

    if role == "flan":
        tasks = set()
        for c in _column_chunks(ds, "task_name"):
            tasks.update(pc.unique(c).to_pylist())
        return {"flan.tasks": len(tasks)}
    text_bytes = sum(pc.sum(pc.binary_length(c)).as_py() or 0 for c in _column_chunks(ds, "text"))
    out = {"pretrain.text_mb": round(text_bytes / 1e6, 3)}
    if "salient_spans" in ds.column_names:  # [start, end] pairs: one salient value each
        lengths = (
            pc.list_value_length(c).fill_null(0).to_numpy() for c in _column_chunks(ds, "salient_spans")
        )
        out["pretrain.salient_values"] = int(sum((n // 2).sum() for n in lengths))
    return out


def main() -> None:
    params = load_params()
    warn_untracked_paths(params)
    t0 = time.perf_counter()
    try:
        data = load_all(params)
    except SourceError as e:
        fail(str(e))
    load_s = time.perf_counter() - t0
    summary, corpus = {}, {}
    with atomic_dir(OUT) as tmp:
        for role in list(data):  # one role at a time, its memory maps closed once it is written
            obj = data.pop(role)
            prepared.save(obj, tmp / role)
            summary[role] = prepared.summarize(obj, role)
            if role in ("pretrain", "flan"):
                corpus.update(corpus_metrics(role, obj))
            del obj
        written_mb = disk_mb(tmp)
    work_s = time.perf_counter() - t0
    metrics = {"load_seconds": round(load_s, 3)}
    for rows in summary.values():
        metrics.update(rows)
    metrics.update(corpus)
    write_json(METRICS / "prepare.json", without_timings(metrics))
    kinds = {role: getattr(params.prepare, role).kind for role in prepared.ROLES}
    with tracked_run(
        "prepare",
        params,
        ["base", "prepare"],
        tags={f"source.{r}": k for r, k in kinds.items()},
        inputs=local_source_roots(params),
        outputs=[METRICS / "prepare.json"],
    ) as run:
        run.log_datasets(hub_datasets(params))
        # throughput: to MLflow only (metrics/prepare.json holds no timings)
        run.log_metrics({**metrics, "work_seconds": work_s, "mb_per_s": written_mb / work_s})
        run.log_dict({"outputs": summary}, "prepare_summary.json")
    print(f"prepare: wrote {OUT} ({', '.join(f'{k}={v}' for k, v in metrics.items() if k.endswith('rows'))})")
    print(f"prepare: {written_mb:.1f} MB of Arrow in {work_s:.1f} s ({written_mb / work_s:.2f} MB/s)")


if __name__ == "__main__":
    run_stage(main)
