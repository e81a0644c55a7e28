"""The grid's vocabulary (flanmoe/grid.py): names built and parsed in one place, and the params, the
stages, dvc.yaml and the report agreeing with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flanmoe import grid
from flanmoe.config import ParamsError, parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "run",
    [
        grid.FinetuneRun("switch", "list_sum", "direct"),
        grid.FinetuneRun("expert_choice", "fact_verification", "after_it"),
        grid.FinetuneRun("st_moe", "entity_typing", "after_it", "non_moe"),
    ],
)
def test_finetune_names_round_trip(run):
    assert grid.parse_finetune_run(run.name) == run


@pytest.mark.parametrize(
    "name", ["switch", "switch-instruct", "switch-list_sum-zero_shot", "list_sum-direct"]
)
def test_names_that_are_not_finetune_runs(name):
    assert grid.parse_finetune_run(name) is None


def test_report_scenarios_and_labels():
    run = grid.FinetuneRun("switch", "list_sum", "after_it", "gate")
    assert run.report_scenario == grid.freeze_scenario("gate") == "after_it-freeze_gate"
    assert run.name == "switch-list_sum-" + run.report_scenario
    assert grid.scenario_label(run.report_scenario) == "after IT, gate frozen"
    assert grid.scenario_label("non_moe") == "non_moe"
    assert [grid.scenario_label(s) for s in grid.SCENARIOS] == ["direct", "after IT"]


def test_finetune_runs_enumerate_the_grid():
    runs = grid.finetune_runs("switch", ["a", "b"], ["direct", "after_it"], ablation=["gate"])
    assert [r.name for r in runs] == [
        "switch-a-direct",
        "switch-a-after_it",
        "switch-b-direct",
        "switch-b-after_it",
        "switch-a-after_it-freeze_gate",
        "switch-b-after_it-freeze_gate",
    ]


def _render(template: str, item: dict[str, str]) -> str:
    for key, value in item.items():
        template = template.replace("${item." + key + "}", value)
    return template


def test_dvc_yaml_names_runs_as_the_grid_does():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    item = {"seed": "1", "arch": "switch", "task": "list_sum", "scenario": "after_it", "freeze": "gate"}
    plain = grid.FinetuneRun("switch", "list_sum", "after_it")
    frozen = grid.FinetuneRun("switch", "list_sum", "after_it", "gate")
    assert _render(stages["finetune"]["outs"][0], item) == f"models/finetune/s1/{plain.name}"
    assert _render(stages["finetune_freeze"]["outs"][0], item) == f"models/finetune/s1/{frozen.name}"
    assert _render(stages["evaluate_freeze"]["cmd"], item).startswith(
        f"python -m stages.evaluate models/finetune/s1/{frozen.name} "
    )


def test_params_accept_exactly_the_grids_words():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    for scenario in grid.SCENARIOS:
        parse_params({**base, "finetune": {**base["finetune"], "scenarios": [scenario]}})
    for option in grid.FREEZE_OPTIONS:
        moe_only = {**base["archs"], "run": ["switch"]}  # a dense arch accepts only "none"
        parse_params({**base, "archs": moe_only, "finetune": {**base["finetune"], "freeze": option}})
    for suite in grid.SUITES:
        parse_params({**base, "evaluate": {**base["evaluate"], "suites": [suite]}})
    bad = [
        ("finetune", "scenarios", ["zero_shot"]),
        ("finetune", "freeze", "router"),
        ("evaluate", "suites", ["glue"]),
        ("freeze_ablation", "freeze", ["none"]),  # the ablation compares frozen runs with "none"
    ]
    for section, key, value in bad:
        with pytest.raises(ParamsError):
            parse_params({**base, section: {**base[section], key: value}})
