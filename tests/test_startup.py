"""A stage's fixed cost: what importing it loads, and MLflow in a helper process that loses nothing.

bench/stage_overhead.py measures the seconds; these tests hold the behaviour that gives them: params
validation loads neither torch, datasets nor mlflow; the model never imports torch._dynamo unless
something compiles; a stage's MLflow run is logged by a helper that drains what a dead stage sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """The top-level packages loaded by ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module", ["stages.pretrain", "stages.instruct", "stages.finetune", "stages.evaluate"]
)
def test_importing_a_stage_or_validating_params_loads_no_heavy_library(module):
    loaded = _modules_after(
        f"import {module}\nfrom flanmoe.config import load_params_or_exit\nload_params_or_exit()"
    )
    assert not loaded & {"torch", "datasets", "mlflow", "pyarrow", "tokenizers"}, loaded


def test_model_import_build_and_meta_load_do_not_import_dynamo():
    code = (
        "import torch, sys\n"
        "from flanmoe.model import build_model, model_config_for_arch\n"
        "cfg = model_config_for_arch('switch', d_model=16, d_ff=32, num_heads=2, d_kv=8,"
        " num_encoder_layers=2, num_decoder_layers=2, moe={'num_experts': 4})\n"
        "m = build_model(cfg, 64)\n"
        "with torch.device('meta'):\n"
        "    build_model(cfg, 64)\n"
        "x = torch.ones(2, 4, dtype=torch.long)\n"
        "m(x, x != 0, labels=torch.ones(2, 3, dtype=torch.long)).loss.backward()\n"
        "assert 'torch._dynamo' not in sys.modules\n"
    )
    assert "torch" in _modules_after(code)


def _runs(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("exp")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _gone(pid: int) -> bool:
    """The process ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_helper_logs_what_a_killed_stage_had_sent(tmp_path):
    """The stage process dies (os._exit, no finish) right after logging: the helper still logs every
    metric it was sent, then ends the run KILLED."""
    script = (
        "import os\n"
        "from flanmoe import tracking_client\n"
        "run = tracking_client.BackgroundRun()\n"
        "run.start('stage:x', 'exp', tags={'stage': 'x'})\n"
        "for step in range(5):\n"
        "    run.log_metrics({'train/loss': 1.0 / (step + 1)}, step=step)\n"
        "print(run._proc.pid, flush=True)\n"
        "os._exit(1)\n"
    )
    db = tmp_path / "mlruns.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    env.pop("FLANMOE_PARENT_RUN_ID", None)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    helper = int(out.stdout.split()[0])
    deadline = time.monotonic() + 120
    while not _gone(helper) and time.monotonic() < deadline:  # the helper outlives the stage
        time.sleep(0.2)
    assert _gone(helper)
    (run,) = _runs(db)
    assert run.info.status == "KILLED" and run.data.tags["stage"] == "x"
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=f"sqlite:///{db}").get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]


def test_helper_without_start_writes_nothing(tmp_path):
    """A stage that stops before its run starts (bad input, exit 2) leaves no MLflow store behind."""
    script = "from flanmoe import tracking_client\ntracking_client.BackgroundRun().finish()\n"
    db = tmp_path / "mlruns.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    assert not db.exists() and not (tmp_path / "mlartifacts").exists()


def test_helper_logs_a_model_and_its_metrics_in_order(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flanmoe import tracking_client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    monkeypatch.delenv("FLANMOE_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}\n")
    run = tracking_client.BackgroundRun()
    run.start("stage:y", "exp", tags={"stage": "y", "arch": "switch"})
    run.log_params({"a": 1, "b": None})
    ref = run.log_model(model_dir, "pretrain-switch", params={"d_model": 16})
    run.log_metrics({"final/val_loss": 2.5}, model_id=ref)
    run.finish()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    (got,) = _runs(tmp_path / "mlruns.db")
    assert got.info.status == "FINISHED" and got.data.params == {"a": "1", "b": "None"}
    (model,) = client.search_logged_models([got.info.experiment_id])
    assert model.tags["arch"] == "switch" and model.params == {"d_model": "16"}
    assert {m.key: m.value for m in model.metrics} == {"final/val_loss": 2.5}


def test_one_pipeline_helper_logs_every_stage_with_its_own_directory_and_parent(tmp_path, monkeypatch):
    """make run's helper: stages connect to it (none imports mlflow); each run goes to the store of
    the stage's own working directory, as a child of the stage's parent run; a stage killed midway
    keeps what it sent; with the helper gone a stage falls back to a helper of its own."""
    from mlflow.tracking import MlflowClient

    from flanmoe import tracking_client

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FLANMOE_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # the helper's own directory: the stages log elsewhere
    script = (
        "import os, sys\n"
        "from flanmoe import tracking_client\n"
        "run = tracking_client.BackgroundRun()\n"
        "assert run._proc is None or sys.argv[2] == 'fallback'\n"
        "run.start('stage:' + sys.argv[1], 'exp', tags={'stage': sys.argv[1]})\n"
        "run.log_metrics({'loss': 1.5}, step=1)\n"
        "if sys.argv[2] == 'kill':\n"
        "    os._exit(1)\n"
        "run.finish()\n"
        "assert 'mlflow' not in sys.modules\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns.db'}")
    parent = client.create_run(client.create_experiment("exp")).info.run_id
    with tracking_client.pipeline_helper() as helper_env:
        assert tracking_client.SOCKET_ENV in helper_env
        env = {**os.environ, **helper_env, "FLANMOE_PARENT_RUN_ID": parent}
        for name, mode in [("a", "ok"), ("b", "kill"), ("c", "ok")]:
            subprocess.run(
                [sys.executable, "-c", script, name, mode], cwd=work, env=env, check=mode != "kill"
            )
    env = {**os.environ, tracking_client.SOCKET_ENV: str(tmp_path / "gone.sock")}
    subprocess.run([sys.executable, "-c", script, "d", "fallback"], cwd=work, env=env, check=True)
    assert not (tmp_path / "mlruns.db").exists()
    runs = {r.data.tags["stage"]: r for r in _runs(work / "mlruns.db") if "stage" in r.data.tags}
    assert {k: r.info.status for k, r in runs.items()} == {
        "a": "FINISHED",
        "b": "KILLED",
        "c": "FINISHED",
        "d": "FINISHED",
    }
    assert {k: r.data.tags.get("mlflow.parentRunId") for k, r in runs.items()} == {
        "a": parent,
        "b": parent,
        "c": parent,
        "d": None,
    }
    assert all(client.get_metric_history(r.info.run_id, "loss")[0].value == 1.5 for r in runs.values())


def test_arrow_reader_gives_what_datasets_gives(tmp_path):
    """flanmoe.data.arrow reads a saved Dataset / DatasetDict (several Arrow files too) with the
    values, types and order datasets.load_from_disk gives, and selects rows like Dataset.select."""
    import datasets

    from flanmoe.data.arrow import load_from_disk

    rows = {
        "input_ids": [[5, 6, 1], [7, 1], [8, 9, 10, 1]] * 5,
        "targets": ["a", "b", "c"] * 5,
        "choices": [["x", "y"], ["z"], []] * 5,
        "answer": [0, 1, 2] * 5,
    }
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "targets": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "answer": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.save_to_disk(str(tmp_path / "one"), num_shards=3)
    datasets.DatasetDict({"train": ds, "test": ds.select([4, 2])}).save_to_disk(str(tmp_path / "dict"))
    ours, ref = load_from_disk(tmp_path / "one"), datasets.load_from_disk(str(tmp_path / "one"))
    assert len(ours) == len(ref) and ours.column_names == ref.column_names
    assert list(ours) == list(ref) and ours[3] == ref[3]
    assert all(ours[c] == list(ref[c]) for c in ref.column_names)
    assert list(ours.select([9, 0, 4])) == list(ref.select([9, 0, 4]))
    splits = load_from_disk(tmp_path / "dict")
    assert sorted(splits) == ["test", "train"] and list(splits["test"]) == [
        rows_at(rows, 4),
        rows_at(rows, 2),
    ]


def rows_at(cols: dict, i: int) -> dict:
    return {k: v[i] for k, v in cols.items()}
