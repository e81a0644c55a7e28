"""dvc.yaml names the exact params keys each stage's result depends on: every key it lists exists in
params.yaml (DVC refuses a stage otherwise), and every field of a stage's params section is either
listed or one the result does not depend on (``NO_RESULT_KEYS`` of the section's model), so a new field
can not be left out of the rerun trigger by mistake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flanmoe.config import Params, flatten

ROOT = Path(__file__).resolve().parents[1]
# keys of a section a stage never reads: the other batching mode, and the grid (the dvc.yaml matrix)
UNREAD = {
    "pretrain": {"max_tokens"},  # packed examples: batch_size
    "instruct": {"batch_size"},  # pairs batched under max_tokens
    "finetune": {"batch_size", "val_examples", "tasks", "scenarios"},  # the task's own validation split
}
TRAINING = {
    "pretrain": "pretrain",
    "instruct": "instruct",
    "finetune": "finetune",
    "finetune_freeze": "finetune",
}


def _dvc_params() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: [p for p in spec.get("params", []) if isinstance(p, str)] for name, spec in stages.items()}


def _params() -> tuple[dict, Params]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return raw, Params.model_validate(raw)


def _has(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_listed_key_is_in_params_yaml():
    raw, _ = _params()
    missing = {stage: [k for k in keys if not _has(raw, k)] for stage, keys in _dvc_params().items()}
    assert {s: m for s, m in missing.items() if m} == {}


@pytest.mark.parametrize("stage", sorted(TRAINING))
def test_training_stages_list_every_key_that_changes_the_result(stage):
    section = TRAINING[stage]
    _, params = _params()
    cfg = getattr(params, section)
    fields = set(flatten(cfg))
    listed = {k.removeprefix(f"{section}.") for k in _dvc_params()[stage] if k.startswith(f"{section}.")}
    assert section not in _dvc_params()[stage]  # not the whole section: log_every would rerun it
    assert listed == fields - type(cfg).NO_RESULT_KEYS - UNREAD[section]
    assert not listed & type(cfg).NO_RESULT_KEYS


@pytest.mark.parametrize(
    ("stage", "section"),
    [
        ("tokenize", "tokenize"),
        ("evaluate", "evaluate"),
        ("evaluate_finetune", "evaluate"),
        ("evaluate_freeze", "evaluate"),
    ],
)
def test_other_sections_leave_out_only_what_changes_no_result(stage, section):
    _, params = _params()
    cfg = getattr(params, section)
    listed = {k.removeprefix(f"{section}.") for k in _dvc_params()[stage] if k.startswith(f"{section}.")}
    assert listed == set(flatten(cfg)) - type(cfg).NO_RESULT_KEYS


def test_data_stages_depend_on_the_data_seed_only_of_base():
    params = _dvc_params()
    assert [k for k in params["prepare"] if k.startswith("base")] == ["base.seed"]
    assert not [k for k in params["tokenize"] if k.startswith("base")]


def test_evaluation_does_not_depend_on_the_training_stages_code():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("evaluate", "evaluate_finetune", "evaluate_freeze"):
        assert "stages/training.py" not in stages[name]["deps"]
    src = (ROOT / "stages" / "evaluate.py").read_text()
    assert "stages.training" not in src


def test_make_run_names_every_missing_key_before_running_anything(tmp_path, monkeypatch, capsys):
    from pipelines import repro
    from pipelines.graph import missing_params

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["pretrain"]["lr"], raw["evaluate"]["bootstrap"]  # valid params (defaults), unknown to DVC
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert missing_params(tmp_path) == [
        "pretrain: pretrain.lr",
        "evaluate: evaluate.bootstrap",
        "evaluate_finetune: evaluate.bootstrap",
        "evaluate_freeze: evaluate.bootstrap",
    ]
    monkeypatch.chdir(tmp_path)
    assert repro.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: keys dvc.yaml names are missing: pretrain: pretrain.lr;")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]  # nothing written
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert missing_params(tmp_path) == []
