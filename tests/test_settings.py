"""The Prefect form's choices come from params.yaml and the grid's vocabulary, not from the code: a
new variant or a real fine-tuning task appears in the form after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import yaml

from flanmoe import grid
from flanmoe.data.embedded import CHANCE
from pipelines import settings

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_form_offers_params_yaml_variants_and_tasks():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert get_args(settings.Arch) == tuple(params["archs"]["variants"])
    assert set(params["finetune"]["tasks"]) <= set(get_args(settings.FinetuneTask))
    assert get_args(settings.Freeze) == grid.FREEZE_OPTIONS
    assert get_args(settings.Scenario) == grid.SCENARIOS


def test_a_new_variant_and_a_local_task_appear(tmp_path):
    path = _write(
        tmp_path,
        {
            "archs": {"variants": {"dense": {}, "switch_64": {"moe": {"num_experts": 64}}}},
            "prepare": {
                "finetune": {"kind": "local", "path": "data/raw/x/{config}.jsonl", "configs": ["my_task"]}
            },
            "finetune": {"tasks": ["my_task", "other_task"]},
        },
    )
    archs, tasks = settings.form_choices(path)
    assert archs == ("dense", "switch_64")
    assert tasks == ("my_task", "other_task")  # not the embedded suite's: it is not the source


def test_the_embedded_suite_offers_all_its_tasks(tmp_path):
    archs, tasks = settings.form_choices(_write(tmp_path, {"finetune": {"tasks": ["list_sum"]}}))
    assert tasks == ("list_sum", *(t for t in CHANCE["finetune"] if t != "list_sum"))
    assert "switch" in archs and "dense" in archs  # no variants in the file: flanmoe.config's defaults


def test_an_unreadable_params_file_gives_the_defaults(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("archs: [unclosed")
    archs, tasks = settings.form_choices(bad)
    assert archs and tasks == tuple(CHANCE["finetune"])
    assert settings.form_choices(tmp_path / "missing.yaml") == (archs, tasks)
