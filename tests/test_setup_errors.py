"""A world that misbehaves before a stage starts gets one clear error, not a traceback: exit 2 naming the
server, file or params key, before any work, nothing written. A tracking server unreachable at the
start, a truncated model.safetensors given as a stage's input model, ``cuda`` without a GPU, a BBH
JSON file without the ``field`` it names."""

from __future__ import annotations

import json
import socket

import pytest

from tests.stage_helpers import TINY_EMBEDDED, local_sources, run_stage, write_params
from tests.test_prepare import _assert_fails_cleanly
from tests.test_pretrain_stage import MICRO_MODEL, MICRO_TOKENIZE, micro_pretrain


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def _listing(work) -> list[str]:
    return sorted(p.name for p in work.iterdir())


# ----------------------------------------------------------------------------- tracking server
def test_unreachable_server_checks_http_uris_only(monkeypatch):
    from flanmoe.tracking_client import unreachable_server

    assert unreachable_server("sqlite:////tmp/mlruns.db") is None
    assert unreachable_server("file:///tmp/mlruns") is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert unreachable_server() is None  # the default local store
    with socket.socket() as server:  # something listening: reachable
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert unreachable_server(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    uri = f"http://127.0.0.1:{_closed_port()}"
    message = unreachable_server(uri)
    assert message.startswith(f"MLFLOW_TRACKING_URI: no MLflow tracking server answers at {uri} (")
    assert "unset MLFLOW_TRACKING_URI" in message
    # one connect with a short timeout, not mlflow's minutes of retries
    timeouts = []

    def hangs(address, timeout):
        timeouts.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    assert "TimeoutError: timed out" in unreachable_server("https://mlflow.example.org")
    assert timeouts == [(("mlflow.example.org", 443), 2.0)]


def test_tracking_server_down_at_the_start_exits_2_before_any_work(tmp_path):
    write_params(tmp_path, prepare={"embedded": TINY_EMBEDDED})
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc = run_stage("prepare", tmp_path, check=False, MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 2, proc.stderr
    assert f"error: MLFLOW_TRACKING_URI: no MLflow tracking server answers at {uri}" in proc.stderr
    assert "unset MLFLOW_TRACKING_URI" in proc.stderr and "Traceback" not in proc.stderr
    assert _listing(tmp_path) == ["params.yaml"]


def test_pipeline_entry_points_check_the_server_before_their_parent_run(tmp_path, monkeypatch):
    """`make run` (pipelines.repro) and the Prefect flow open a parent run first: same check, same error."""
    import subprocess
    import sys

    from pipelines.flow import plan_run
    from tests.stage_helpers import REPO

    write_params(tmp_path, prepare={"embedded": TINY_EMBEDDED})
    uri = f"http://127.0.0.1:{_closed_port()}"
    env = {**__import__("os").environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.repro"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert f"error: MLFLOW_TRACKING_URI: no MLflow tracking server answers at {uri}" in proc.stderr
    assert "Traceback" not in proc.stderr and _listing(tmp_path) == ["params.yaml"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ValueError, match=f"no MLflow tracking server answers at {uri}"):
        plan_run(None, None, None, None, None, str(REPO))


# ----------------------------------------------------------------------------- input models
def _export(work, dest: str) -> None:
    """A small model exported where a training stage puts it (a stand-in tokenizer.json beside it)."""
    import torch

    from flanmoe.config import load_params
    from flanmoe.model import build_model, save_pretrained

    torch.manual_seed(0)
    model = build_model(load_params(work / "params.yaml").arch_config("dense"), 600)
    save_pretrained(model, work / dest)
    (work / dest / "tokenizer.json").write_text("{}\n")


def _truncate(file) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def test_check_weights_names_a_truncated_or_overwritten_file(tmp_path):
    from flanmoe.model.pretrained import check_weights, load_pretrained

    write_params(tmp_path, model=MICRO_MODEL)
    _export(tmp_path, "m")
    file = tmp_path / "m" / "model.safetensors"
    assert check_weights(tmp_path / "m") == file
    whole = file.read_bytes()
    for broken in (whole[: len(whole) - 1], whole[:100], b"not a safetensors file" * 4):
        file.write_bytes(broken)
        with pytest.raises(ValueError, match=f"{file}: truncated or corrupt"):
            check_weights(tmp_path / "m")
        with pytest.raises(ValueError, match=f"{file}: truncated or corrupt"):
            load_pretrained(tmp_path / "m")
    file.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors: missing"):
        check_weights(tmp_path / "m")


@pytest.mark.parametrize(
    ("stage", "args", "model", "hint"),
    [
        ("evaluate", ("models/pretrain/s1234/dense",), "models/pretrain/s1234/dense", "rerun the pretrain stage"),
        ("instruct", ("dense",), "models/pretrain/s1234/dense", "rerun the pretrain stage that writes it (dvc repro pretrain@dense-1234)"),
        ("finetune", ("dense", "fact_verification", "after_it"), "models/instruct/s1234/dense", "rerun the instruct stage that writes it (dvc repro instruct@dense-1234)"),
    ],
)  # fmt: skip
def test_truncated_input_model_exits_2_naming_the_file(tmp_path, stage, args, model, hint):
    write_params(
        tmp_path, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE, model=MICRO_MODEL,
        evaluate={"suites": ["mmlu", "bbh"]},
    )  # fmt: skip
    tokenized = tmp_path / "data" / "tokenized"
    for name in ("mmlu", "bbh", "flan", "finetune/fact_verification"):  # what the stages require first
        (tokenized / name).mkdir(parents=True)
    (tokenized / "tokenizer.json").write_text("{}\n")
    _export(tmp_path, model)
    _truncate(tmp_path / model / "model.safetensors")
    proc = run_stage(stage, tmp_path, check=False, args=args)
    assert proc.returncode == 2, proc.stderr
    assert f"{model}/model.safetensors: truncated or corrupt" in proc.stderr and hint in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _listing(tmp_path) == ["data", "models", "params.yaml"]
    assert _listing(tmp_path / "data") == ["tokenized"] and _listing(tmp_path / "models") == [
        model.split("/")[1]
    ]


def test_truncated_hf_checkpoint_exits_2_naming_the_file(tmp_path):
    from tests.hf_fixtures import tiny_hf_switch
    from tests.test_hf_init import _fails, _workspace

    ckpt = tiny_hf_switch(tmp_path / "ckpt", vocab_size=320)
    _truncate(ckpt / "model.safetensors")
    err = _fails(_workspace(tmp_path, f"hf:{ckpt}"))
    assert (
        f"archs.variants.switch.init (hf:{ckpt}): {ckpt / 'model.safetensors'}: truncated or corrupt" in err
    )
    assert "download the checkpoint again" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- device
@pytest.mark.parametrize(
    ("stage", "args", "sections", "key"),
    [
        ("pretrain", ("dense",), {"pretrain": micro_pretrain(parallel={**micro_pretrain()["parallel"], "device": "cuda"})}, "pretrain.parallel.device: cuda"),
        ("evaluate", ("models/pretrain/s1234/dense",), {"evaluate": {"device": "cuda"}}, "evaluate.device: cuda"),
    ],
)  # fmt: skip
def test_cuda_without_a_gpu_exits_2_naming_the_key(tmp_path, stage, args, sections, key):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: cuda is valid here")
    write_params(tmp_path, model=MICRO_MODEL, **sections)
    proc = run_stage(stage, tmp_path, check=False, args=args)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {key}, but no GPU is visible here" in proc.stderr and "Traceback" not in proc.stderr
    assert _listing(tmp_path) == ["params.yaml"]


# ----------------------------------------------------------------------------- BBH field
def test_bbh_file_without_its_field_exits_2_naming_field_file_and_keys(tmp_path):
    root = tmp_path / "bbh"
    root.mkdir()
    rows = [{"input": "not ( True ) and ( True ) is", "target": "False"}]
    (root / "boolean_expressions.json").write_text(json.dumps({"canary": "c", "data": rows}))
    spec = {"kind": "local", "path": str(root / "{config}.json"), "field": "examples"}
    spec["configs"] = ["boolean_expressions"]
    message = (
        f"source 'bbh': {root / 'boolean_expressions.json'}: has no field 'examples' "
        "(its keys: 'canary', 'data') (prepare.bbh.field)"
    )
    _assert_fails_cleanly(tmp_path, "bbh", spec, message)
    assert local_sources()["bbh"]["field"] == "examples"  # the layout the fixtures and docs use
