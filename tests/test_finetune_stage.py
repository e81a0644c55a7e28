"""Stage `finetune` on micro shapes: both scenarios start from the right model, freezing holds, the
best model is exported; clear exit-2 errors before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.stage_helpers import TINY_EMBEDDED, logged_datasets, mlflow_client, run_stage, write_params
from tests.test_instruct_stage import micro_instruct
from tests.test_pretrain_stage import (
    MICRO_MODEL,
    MICRO_TOKENIZE,
    _workspace,
    micro_pretrain,
    tokenized,  # noqa: F401 (fixture)
)

pytestmark = pytest.mark.slow


def micro_finetune(**over) -> dict:
    cfg = {
        **micro_instruct(steps=4, eval_every=1, log_every=1),
        "tasks": ["fact_verification"],
        "scenarios": ["direct", "after_it"],
    }
    cfg.pop("mixture")
    cfg.update(over)
    return cfg


def _ft_workspace(tmp_path, tokenized, archs=("dense", "switch"), **over):  # noqa: F811
    work = _workspace(tmp_path, tokenized, steps=2)
    write_params(
        work, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE, model=MICRO_MODEL,
        archs={"run": list(archs)},
        pretrain=micro_pretrain(steps=2), instruct=micro_instruct(steps=2), finetune=micro_finetune(**over),
    )  # fmt: skip
    return work


def _stage(work, *args, check=True):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.finetune", *args], cwd=work, env=env, capture_output=True, text=True
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_scenarios_start_from_their_models_freeze_and_export_the_best(tmp_path, tokenized):  # noqa: F811
    import torch
    from safetensors.torch import load_file

    work = _ft_workspace(
        tmp_path, tokenized, archs=["switch"], freeze="gate", lr=0.05, early_stopping_patience=1
    )
    run_stage("pretrain", work, args=("switch",))
    run_stage("instruct", work, args=("switch",))
    for scenario, init in (("direct", "pretrain"), ("after_it", "instruct")):
        out = _stage(work, "switch", "fact_verification", scenario)
        variant = f"switch-fact_verification-{scenario}"
        assert f"finetune@{variant}:" in out.stdout
        start = load_file(work / "models" / init / "s1234" / "switch" / "model.safetensors")
        tuned = load_file(work / "models" / "finetune" / "s1234" / variant / "model.safetensors")
        routers = [k for k in start if ".router." in k]
        assert routers and all(torch.equal(start[k], tuned[k]) for k in routers)  # gate frozen
        assert any(not torch.equal(start[k], tuned[k]) for k in start if ".router." not in k)
        m = json.loads((work / "metrics" / "finetune" / "s1234" / f"{variant}.json").read_text())
        assert m["task"] == "fact_verification" and m["scenario"] == scenario and m["freeze"] == "gate"
        assert m["trainable_params"] < m["params"]
        curve = json.loads((work / "plots" / "finetune" / "s1234" / f"{variant}.json").read_text())
        assert len({tuple(p) for p in curve}) == 1  # the same keys in every row (DVC plots need it)
        best = min((p for p in curve if p["val_loss"] is not None), key=lambda p: p["val_loss"])
        assert m["best_step"] == best["step"] and m["best_val_loss"] == best["val_loss"]  # exported

    # MLflow: the runs compare by task, scenario and freeze; each logs its data and its exported model
    from flanmoe.tracking import search_runs

    runs = search_runs("flan-moe", "tags.stage = 'finetune'", uri=f"sqlite:///{work / 'mlruns.db'}")
    assert {r["tags"]["scenario"] for r in runs} == {"direct", "after_it"}
    client = mlflow_client(work)
    for run in runs:
        tags = run["tags"]
        assert (tags["task"], tags["freeze"], tags["seed"]) == ("fact_verification", "gate", "1234")
        assert set(logged_datasets(work, run["run_id"])) == {"data/tokenized/finetune/fact_verification"}
        (output,) = client.get_run(run["run_id"]).outputs.model_outputs
        model = client.get_logged_model(output.model_id)
        assert model.name == f"finetune-switch-fact_verification-{tags['scenario']}"
        assert model.tags["freeze"] == "gate" and model.tags["router"] == "switch"
        assert model.params["dropout_rate"] == "0.1"  # the model as this stage configured it


@pytest.mark.parametrize(
    ("args", "over", "expected"),
    [
        (("switch", "no_such_task", "direct"), {}, "task: 'no_such_task' is not in data/tokenized/finetune"),
        (("switch", "fact_verification", "zero_shot"), {}, "scenario: unknown scenario 'zero_shot'"),
        (
            ("switch", "fact_verification", "direct"),
            {},
            "models/pretrain/s1234/switch not found: run the pretrain stage",
        ),
        (
            ("dense", "fact_verification", "direct"),
            {"freeze": "experts"},
            "finetune.freeze: 'experts' needs MoE archs",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tokenized, args, over, expected):  # noqa: F811
    work = _ft_workspace(tmp_path, tokenized, **over)
    proc = _stage(work, *args, check=False)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "params.yaml"]
