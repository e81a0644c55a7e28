"""Stage `instruct` on micro shapes: starts from the pretrained model, mixes tasks, exports; clear
errors before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.stage_helpers import run_stage
from tests.test_pretrain_stage import _workspace, micro_pretrain, tokenized  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def micro_instruct(**over) -> dict:
    cfg = {
        **micro_pretrain(steps=4, val_examples=8),
        "max_tokens": 512,
        "mixture": {"cap": 3, "temperature": 1.0},
    }
    cfg.pop("batch_size")
    cfg.update(over)
    return cfg


def _instruct_workspace(tmp_path, tokenized, **over):  # noqa: F811
    from tests.stage_helpers import TINY_EMBEDDED, write_params
    from tests.test_pretrain_stage import MICRO_MODEL, MICRO_TOKENIZE

    work = _workspace(tmp_path, tokenized, steps=2)
    write_params(
        work, prepare={"embedded": TINY_EMBEDDED}, tokenize=MICRO_TOKENIZE, model=MICRO_MODEL,
        pretrain=micro_pretrain(steps=2), instruct=micro_instruct(**over),
    )  # fmt: skip
    return work


def test_instruct_starts_from_the_pretrained_model_and_exports(tmp_path, tokenized):  # noqa: F811
    import torch
    from safetensors.torch import load_file

    work = _instruct_workspace(tmp_path, tokenized, lr=1e-12, warmup_steps=0)
    run_stage("pretrain", work, args=("switch",))
    out = run_stage("instruct", work, args=("switch",))
    assert "instruct@switch: 4 steps" in out.stdout
    pre = load_file(work / "models" / "pretrain" / "s1234" / "switch" / "model.safetensors")
    ins = load_file(work / "models" / "instruct" / "s1234" / "switch" / "model.safetensors")
    for k in pre:  # lr ~ 0: instruction tuning started from the pretrained weights
        torch.testing.assert_close(ins[k], pre[k], rtol=0, atol=1e-6, msg=k)
    metrics = json.loads((work / "metrics" / "instruct" / "s1234" / "switch.json").read_text())
    mix = metrics["mixture"]
    assert mix["tasks"] > 1 and mix["rows"] <= 3 * mix["tasks"]  # cap 3 per task
    assert mix["zero_shot"] + mix["few_shot"] == pytest.approx(1.0) and 0 <= mix["with_options"] <= 1
    assert metrics["val_loss"] > 0 and 0 <= metrics["pad_fraction"] < 1
    assert json.loads((work / "plots" / "instruct" / "s1234" / "switch.json").read_text())


def test_instruct_without_a_pretrained_model_exits_2(tmp_path, tokenized):  # noqa: F811
    work = _instruct_workspace(tmp_path, tokenized)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlruns.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.instruct", "switch"], cwd=work, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "models/pretrain/s1234/switch not found: run the pretrain stage first" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["data", "params.yaml"]


def test_replay_mixes_pretraining_chunks_without_their_padding(tmp_path):
    """instruct.mixture.replay: that share of the examples are pretraining chunks (pads stripped),
    drawn without replacement, the same for the same seed."""
    import datasets
    import numpy as np

    from stages.instruct import with_replay

    rng = np.random.default_rng(0)
    inputs = [list(rng.integers(5, 50, 6)) + [1, 0, 0] for _ in range(40)]
    labels = [list(rng.integers(5, 50, 2)) + [1, 0] for _ in range(40)]
    pre = datasets.Dataset.from_dict({"input_ids": inputs, "labels": labels})
    pre.save_to_disk(str(tmp_path / "pretrain"))
    pairs = datasets.Dataset.from_dict(
        {"input_ids": [[7, 8, 1]] * 14, "labels": [[9, 1]] * 14, "task_name": ["t"] * 14}
    )
    mixed, n = with_replay(pairs, 0.3, seed=3, pretrain_dir=tmp_path / "pretrain")
    assert n == 6 and len(mixed) == 20 and mixed.column_names == ["input_ids", "labels"]
    replayed = mixed.select(range(14, 20))
    assert all(0 not in x and x[-1] == 1 and len(x) == 7 for x in replayed["input_ids"])
    chunks = {tuple(x) for x in replayed["input_ids"]}
    assert len(chunks) == 6 and chunks <= {tuple(x[:7]) for x in inputs}
    again, _ = with_replay(pairs, 0.3, seed=3, pretrain_dir=tmp_path / "pretrain")
    assert again["input_ids"] == mixed["input_ids"]
    other, _ = with_replay(pairs, 0.3, seed=4, pretrain_dir=tmp_path / "pretrain")
    assert other["input_ids"] != mixed["input_ids"]
