"""Stage `prepare` end to end: layout, determinism, MLflow record, and nothing half-written on errors."""

import json
from pathlib import Path

import datasets

from flanmoe import tracking
from flanmoe.data import prepared
from stages.common import dvc_md5
from tests.stage_helpers import (
    FT_TASKS,
    TINY_EMBEDDED,
    artifact_paths,
    local_sources,
    logged_datasets,
    run_stage,
    write_params,
)


def test_local_sources_layout_metrics_and_mlflow(tmp_path):
    write_params(tmp_path, prepare=local_sources())
    proc = run_stage("prepare", tmp_path)
    # fixtures live outside data/raw/: DVC would not see them change, and the stage says so
    assert "warning: prepare.flan.path" in proc.stderr and "outside data/raw/" in proc.stderr
    out = tmp_path / "data" / "prepared"
    assert sorted(p.name for p in out.iterdir()) == sorted(prepared.ROLES)
    assert datasets.load_from_disk(str(out / "pretrain")).num_rows == 3
    mmlu = prepared.load(out, "mmlu")
    assert set(mmlu) == {"dev", "validation", "test"} and mmlu["test"].num_rows == 3
    assert set(prepared.load(out, "bbh")) == {"boolean_expressions", "word_sorting"}
    ft = prepared.load(out, "finetune")
    assert sorted(ft) == sorted(FT_TASKS) and ft["copy"]["train"].num_rows == 2
    metrics = json.loads((tmp_path / "metrics" / "prepare.json").read_text())
    assert metrics["flan.rows"] == 4 and metrics["mmlu.test.rows"] == 3
    assert metrics["finetune.sentiment.validation.rows"] == 1

    runs = tracking.search_runs(
        "flan-moe", "tags.stage = 'prepare'", uri=f"sqlite:///{tmp_path / 'mlruns.db'}"
    )
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED"
    run = runs[0]
    assert run["params"]["prepare.mmlu.kind"] == "local"
    assert run["params"]["base.seed"] == "1234"
    assert run["metrics"]["flan.rows"] == 4.0
    assert run["tags"]["source.flan"] == "local"
    assert "git_commit" not in run["tags"]  # tmp_path is no git checkout: no commit is invented
    # the local source files as the run's datasets, by path and DVC hash
    read = logged_datasets(tmp_path, run["run_id"])
    roots = [spec["path"].split("{")[0].rstrip("/") for spec in local_sources().values()]
    assert sorted(read) == sorted(roots)
    assert all(d["digest"] == dvc_md5(Path(name)) and d["context"] == "source" for name, d in read.items())
    assert "metrics/prepare.json" in artifact_paths(tmp_path, run["run_id"])
    # throughput: printed and in the MLflow run, never in the DVC metrics file (no timings there)
    assert run["metrics"]["mb_per_s"] > 0 and run["metrics"]["work_seconds"] > 0
    assert "MB/s" in proc.stdout and not any(k.endswith(("per_s", "seconds")) for k in metrics)


def test_same_params_same_bytes(tmp_path):
    # the embedded suite (tiny) plus local sources: two runs give identical files, hash for hash
    sources = local_sources() | {"pretrain": {"kind": "embedded"}, "mmlu": {"kind": "embedded"}}
    hashes = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        write_params(work, prepare={**sources, "embedded": TINY_EMBEDDED})
        run_stage("prepare", work)
        hashes.append({role: dvc_md5(work / "data" / "prepared" / role) for role in prepared.ROLES})
        hashes[-1]["metrics"] = dvc_md5(work / "metrics" / "prepare.json")  # no timings in it
    assert hashes[0] == hashes[1]
    # and another seed gives other data
    work = tmp_path / "c"
    work.mkdir()
    write_params(work, prepare={**sources, "embedded": {**TINY_EMBEDDED, "seed": 99}})
    run_stage("prepare", work)
    assert dvc_md5(work / "data" / "prepared" / "pretrain") != hashes[0]["pretrain"]


def _assert_fails_cleanly(tmp_path, role: str, spec: dict, message: str) -> None:
    """`prepare` with one bad source: exit 2 naming it, the earlier output untouched, no metrics."""
    write_params(tmp_path, prepare=local_sources() | {role: spec})
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "marker").write_text("old")
    proc = run_stage("prepare", tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["prepared"]
    assert [p.name for p in (tmp_path / "data" / "prepared").iterdir()] == ["marker"]
    assert not (tmp_path / "metrics").exists()


def test_missing_file_exits_2_and_leaves_nothing(tmp_path):
    spec = {"kind": "local", "path": "/nonexistent/mmlu/{split}.jsonl"}
    _assert_fails_cleanly(
        tmp_path, "mmlu", spec, "source 'mmlu': file not found: /nonexistent/mmlu/test.jsonl"
    )


def test_missing_column_exits_2_and_leaves_nothing(tmp_path):
    bad = tmp_path / "flan.jsonl"
    bad.write_text(json.dumps({"inputs": "a", "targets": "b"}) + "\n")
    message = f"source 'flan' ({bad} split train): missing required column 'task_source'"
    _assert_fails_cleanly(tmp_path, "flan", {"kind": "local", "path": str(bad)}, message)


def test_local_sources_under_data_raw_need_no_warning(tmp_path, fixtures):
    import shutil

    shutil.copytree(fixtures, tmp_path / "data" / "raw")
    sources = {
        role: {**spec, "path": spec["path"].replace(str(fixtures), "data/raw")}
        for role, spec in local_sources().items()
    }
    write_params(tmp_path, prepare=sources)
    proc = run_stage("prepare", tmp_path)
    assert "warning" not in proc.stderr
    assert prepared.load(tmp_path / "data" / "prepared", "mmlu")["test"].num_rows == 3


def _chunked(n: int) -> datasets.Dataset:
    """``n`` rows held in several Arrow record batches (as ``map`` writes them)."""
    ds = datasets.Dataset.from_dict({"i": list(range(n)), "text": [f"row {i} " * (i % 7) for i in range(n)]})
    return ds.map(lambda b: {"ids": [[i, i + 1] for i in b["i"]]}, batched=True, batch_size=64)


def test_content_hash_streams_and_keeps_the_hash_of_small_tables(monkeypatch):
    ds = _chunked(1000)
    assert ds.data.table.column("i").num_chunks > 1
    # under HASH_BATCH_BYTES: the hash of the whole table in one record batch, as before (the
    # embedded suite's state.json files, and so DVC's hashes, do not change)
    for d in (ds, ds.select(range(3, 900, 7)), ds.select([])):
        assert prepared.content_hash(d) == prepared.content_hash_in_memory(d)
    # over it: batches of at most that size (one source batch may be alone over it), never the table
    monkeypatch.setattr(prepared, "HASH_BATCH_BYTES", 2000)
    batches = list(prepared._hash_batches(ds.data.table))
    assert len(batches) > 2 and sum(b.num_rows for b in batches) == len(ds)
    assert all(b.nbytes <= 2000 or b.num_rows <= 64 for b in batches)
    streamed = prepared.content_hash(ds)
    assert streamed == prepared.content_hash(_chunked(1000))  # same data, same hash
    changed = ds.map(lambda r: {"text": r["text"] + ("!" if r["i"] == 999 else "")})
    assert prepared.content_hash(changed) != streamed  # the last row counts too


def test_corpus_metrics_read_columns_in_chunks():
    from stages.prepare import corpus_metrics

    docs = datasets.Dataset.from_dict(
        {"text": ["héllo", "", "wörld " * 300] * 5000, "salient_spans": [[0, 2], [], [1, 3, 5, 8, 9]] * 5000}
    ).select(range(14_999, -1, -2))  # an indices mapping, over several batches of 10,000
    flan = datasets.Dataset.from_dict({"task_name": [f"t{i % 13}" for i in range(25_000)]})
    assert corpus_metrics("pretrain", docs) == {
        "pretrain.text_mb": round(sum(len(t.encode()) for t in docs["text"]) / 1e6, 3),
        "pretrain.salient_values": sum(len(s) // 2 for s in docs["salient_spans"]),
    }
    assert corpus_metrics("flan", flan) == {"flan.tasks": 13}
    assert "pretrain.salient_values" not in corpus_metrics("pretrain", docs.remove_columns("salient_spans"))
