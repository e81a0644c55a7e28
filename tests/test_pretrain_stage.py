"""Stage `pretrain` as DVC runs it, on micro shapes: outputs, resume after kill -9 (bit for bit),
MLflow run and tags, and exit-2 errors before anything is written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flanmoe import tracking
from tests.stage_helpers import (
    TINY_EMBEDDED,
    artifact_paths,
    logged_datasets,
    mlflow_client,
    run_stage,
    write_params,
)

pytestmark = pytest.mark.slow

MICRO_MODEL = {
    "preset": None,
    "d_model": 32,
    "d_ff": 64,
    "num_heads": 2,
    "d_kv": 16,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "moe": {"num_experts": 4, "moe_every": 2},
}
MICRO_TOKENIZE = {"vocab_size": 600, "num_sentinels": 20, "input_length": 64, "target_length": 16}


def micro_pretrain(**over) -> dict:
    cfg = {
        "steps": 6,
        "batch_size": 4,
        "val_examples": 8,
        "warmup_steps": 2,
        "eval_every": 3,
        "log_every": 2,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "parallel": {"nproc": 1, "ep": 1, "device": "cpu", "dtype": "float32", "threads": 1},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    """data/ of a micro embedded suite, prepared and tokenized once for the module."""
    work = tmp_path_factory.mktemp("tok")
    write_params(work, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE)
    run_stage("prepare", work)
    run_stage("tokenize", work)
    return work / "data"


def _workspace(tmp_path: Path, tokenized: Path, **pretrain) -> Path:
    shutil.copytree(tokenized, tmp_path / "data")
    write_params(
        tmp_path,
        prepare={"embedded": TINY_EMBEDDED},
        tokenize=MICRO_TOKENIZE,
        model=MICRO_MODEL,
        pretrain=micro_pretrain(**pretrain),
    )
    return tmp_path


def test_prepare_and_tokenize_runs_log_inputs_tags_and_files(tokenized):
    """The module's prepare and tokenize runs (embedded sources): tags, datasets, metrics files."""
    from stages.common import dvc_md5

    work = tokenized.parent
    runs = {
        r["tags"]["stage"]: r for r in tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    }
    assert set(runs) == {"prepare", "tokenize"}
    assert runs["prepare"]["tags"]["seed"] == "1234" and "dvc_exp" not in runs["prepare"]["tags"]
    assert runs["tokenize"]["tags"]["seed"] == "1234"  # tokenize.seed
    assert logged_datasets(work, runs["prepare"]["run_id"]) == {}  # embedded: no file or hub source
    assert logged_datasets(work, runs["tokenize"]["run_id"]) == {
        "data/prepared": {
            "digest": dvc_md5(tokenized / "prepared"),
            "source": {"uri": "data/prepared"},
            "source_type": "local",
            "context": "source",
        }
    }
    assert "metrics/prepare.json" in artifact_paths(work, runs["prepare"]["run_id"])
    assert {"metrics/tokenize.json", "tokenizer.json"} <= artifact_paths(work, runs["tokenize"]["run_id"])


def test_pretrain_writes_model_metrics_plot_and_mlflow_run(tmp_path, tokenized):
    work = _workspace(tmp_path, tokenized)
    proc = run_stage("pretrain", work, args=("switch",), DVC_EXP_NAME="exp-micro")  # as `dvc exp run` sets it
    assert "pretrain@switch: 6 steps, train loss" in proc.stdout
    rerun = run_stage(
        "pretrain", work, args=("switch",)
    )  # resumes from the final checkpoint: nothing left to train
    assert "pretrain@switch: 6 steps, resumed from step 6" in rerun.stdout

    from flanmoe.model import load_pretrained

    model_dir = work / "models" / "pretrain" / "s1234" / "switch"
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    model = load_pretrained(model_dir)
    assert model.cfg.moe is not None and model.cfg.moe.num_experts == 4

    metrics = json.loads((work / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    assert metrics["steps"] == 6 and metrics["val_loss"] > 0 and metrics["train_loss"] > 0
    assert metrics["params"] > metrics["active_params"] > 0 and metrics["flops_per_token"] > 0
    assert metrics["tokens_seen"] > 0 and 0 <= metrics["pad_fraction"] < 0.5
    assert "moe/dropped_fraction" in metrics["router"] and metrics["expert_load"]
    curve = json.loads((work / "plots" / "pretrain" / "s1234" / "switch.json").read_text())
    assert [row["step"] for row in curve] == [2, 4, 6]
    assert all(not any(k.endswith("seconds") for k in row) for row in curve)

    runs = tracking.search_runs("flan-moe", uri=f"sqlite:///{work / 'mlruns.db'}")
    assert len(runs) == 2 and all(r["status"] == "FINISHED" for r in runs)
    for run in runs:
        assert run["tags"]["stage"] == "pretrain" and run["tags"]["arch"] == "switch"
        assert run["tags"]["router"] == "switch" and run["tags"]["num_experts"] == "4"
        assert run["tags"]["seed"] == "1234" and run["tags"]["freeze"] == "none"
    trained = [r for r in runs if "train/lm_loss" in r["metrics"]]
    assert len(trained) == 1  # the resumed rerun trained nothing
    rerun_tags = next(r["tags"] for r in runs if r is not trained[0])
    assert trained[0]["tags"]["dvc_exp"] == "exp-micro" and "dvc_exp" not in rerun_tags  # not under DVC
    m = trained[0]["metrics"]
    assert m["final/val_loss"] == pytest.approx(metrics["val_loss"])
    assert {"train/grad_norm", "train/lr", "router/moe/entropy", "router/moe/dropped_fraction"} <= set(m)

    # the data read, by reference: its DVC hash and path
    from stages.common import dvc_md5

    run_id = trained[0]["run_id"]
    assert logged_datasets(work, run_id) == {
        "data/tokenized/pretrain": {
            "digest": dvc_md5(work / "data" / "tokenized" / "pretrain"),
            "source": {"uri": "data/tokenized/pretrain"},
            "source_type": "local",
            "context": "training",
        }
    }
    assert artifact_paths(work, run_id) == {
        "metrics/pretrain/s1234/switch.json",
        "plots/pretrain/s1234/switch.json",
    }
    # the exported model: an MLflow logged model, output of the run, with its files as exported
    from mlflow.entities import LoggedModelStatus

    client = mlflow_client(work)
    models = [lm for lm in client.search_logged_models([client.get_run(run_id).info.experiment_id])
              if lm.source_run_id == run_id]  # fmt: skip
    assert len(models) == 1
    lm = models[0]
    assert (lm.name, lm.status, lm.model_type) == ("pretrain-switch", LoggedModelStatus.READY, "flanmoe")
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [lm.model_id]
    assert (
        lm.tags["arch"] == "switch" and lm.tags["stage"] == "pretrain" and lm.tags["dvc_exp"] == "exp-micro"
    )
    assert lm.tags["model_md5"] == dvc_md5(model_dir)
    assert lm.params["d_model"] == "32" and lm.params["moe.num_experts"] == "4"
    assert {x.key: x.value for x in lm.metrics}["final/val_loss"] == pytest.approx(metrics["val_loss"])
    files = {f.path for f in client.list_logged_model_artifacts(lm.model_id)}
    assert files == {"MLmodel", "config.json", "model.safetensors", "tokenizer.json"}


def _kill_when_checkpoint(proc: subprocess.Popen, ckpt_root: Path, step: int, timeout: float = 120) -> None:
    target = ckpt_root / f"step-{step:08d}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if target.is_dir() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_then_rerun_resumes_and_equals_uninterrupted(tmp_path, tokenized):
    from safetensors.torch import load_file

    over = {"steps": 10, "checkpoint_every": 2}
    ref = _workspace(tmp_path / "ref", tokenized, **over)
    run_stage("pretrain", ref, args=("switch",))

    work = _workspace(tmp_path / "killed", tokenized, **over)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.pretrain", "switch"], cwd=work, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _kill_when_checkpoint(proc, work / "checkpoints" / "pretrain" / "s1234" / "switch", 4)
    assert not (work / "models" / "pretrain" / "s1234" / "switch").exists()  # nothing exported by a dead run
    out = run_stage("pretrain", work, args=("switch",))
    assert "resumed from step" in out.stdout
    a = load_file(ref / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors")
    b = load_file(work / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k  # bit for bit
    ma = json.loads((ref / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    mb = json.loads((work / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    assert ma == mb


def test_checkpoints_of_other_params_are_not_resumed(tmp_path, tokenized):
    work = _workspace(tmp_path, tokenized, steps=4)
    run_stage("pretrain", work, args=("switch",))
    write_params(
        work, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE, model=MICRO_MODEL,
        pretrain=micro_pretrain(steps=4, lr=0.0005),
    )  # fmt: skip
    out = run_stage("pretrain", work, args=("switch",))
    assert "starting fresh" in out.stdout and "resumed" not in out.stdout


def test_checkpoints_of_other_code_are_not_resumed(tmp_path, tokenized):
    # DVC reruns a stage whose code changed: the rerun must train anew, not resume the old run
    work = _workspace(tmp_path, tokenized, steps=4)
    (work / "stages").mkdir()
    (work / "stages" / "fake_dep.py").write_text("x = 1\n")
    (work / "dvc.yaml").write_text(
        "stages:\n  pretrain:\n    foreach: [switch]\n    do:\n      cmd: python -m stages.pretrain ${item}\n"
        "      deps:\n        - stages/fake_dep.py\n"
    )
    run_stage("pretrain", work, args=("switch",))
    assert "resumed from step 4" in run_stage("pretrain", work, args=("switch",)).stdout  # same code
    (work / "stages" / "fake_dep.py").write_text("x = 2\n")
    out = run_stage("pretrain", work, args=("switch",))
    assert "starting fresh" in out.stdout and "resumed" not in out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["moe64"], "arch: unknown arch 'moe64'"),
        ([], "usage: python -m stages.pretrain <arch>"),
    ],
)
def test_bad_arch_exits_2_and_writes_nothing(tmp_path, tokenized, args, expected):
    work = _workspace(tmp_path, tokenized)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.pretrain", *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "params.yaml"]


def test_missing_tokenized_data_and_too_many_val_examples(tmp_path, tokenized):
    write_params(tmp_path, model=MICRO_MODEL, pretrain=micro_pretrain())
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.pretrain", "dense"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "data/tokenized/pretrain not found" in proc.stderr
    work = _workspace(tmp_path / "w", tokenized, val_examples=100000)
    proc = run_stage("pretrain", work, check=False, args=("switch",))
    assert proc.returncode == 2 and "pretrain.val_examples: 100000 >=" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "params.yaml"]


@pytest.mark.distributed
def test_torchrun_ep2_equals_one_process_with_accumulation(tmp_path, tokenized):
    """nproc 2 re-launches under torchrun (gloo, EP=2 + FSDP2); same groups as 1 process x accum 2."""
    from safetensors.torch import load_file

    two = _workspace(
        tmp_path / "two", tokenized, steps=4, parallel={**micro_pretrain()["parallel"], "nproc": 2, "ep": 2}
    )
    one = _workspace(tmp_path / "one", tokenized, steps=4, grad_accum=2)
    out = run_stage("pretrain", two, args=("switch",))
    assert "pretrain@switch: 4 steps" in out.stdout
    run_stage("pretrain", one, args=("switch",))
    a = load_file(one / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors")
    b = load_file(two / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the experts come back whole from the two ranks
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    ma = json.loads((one / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    mb = json.loads((two / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    assert mb["val_loss"] == pytest.approx(ma["val_loss"], rel=1e-5)
    assert mb["train_loss"] == pytest.approx(ma["train_loss"], rel=1e-5)
    assert mb["router"] == pytest.approx(ma["router"], rel=1e-5)  # stats summed over both ranks


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server_gone_mid_run_training_goes_on(tmp_path, tokenized):
    """A real `mlflow server` on 127.0.0.1, killed while the stage trains: the stage finishes, warns,
    and its metrics file holds the final figures."""
    import urllib.request

    work = _workspace(tmp_path, tokenized, steps=400, log_every=1, eval_every=400, checkpoint_every=400)
    port = _free_port()
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "server-artifacts")],
        env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("mlflow server did not start")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        stage = subprocess.Popen(
            [sys.executable, "-m", "stages.pretrain", "switch"], cwd=work, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # kill the server once training is under way (its progress lines are on stdout)
        for line in stage.stdout:
            if "step 20/400" in line:
                os.killpg(server.pid, signal.SIGKILL)
                break
        out, err = stage.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert stage.returncode == 0, err[-3000:]
    assert "MLflow logging failed" in err and "step 400/400" in out
    metrics = json.loads((work / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    assert metrics["steps"] == 400 and metrics["val_loss"] > 0
    assert (work / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors").is_file()
