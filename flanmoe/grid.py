"""The experiment grid's vocabulary, defined once: fine-tuning scenarios and freeze options, evaluation
suites and modes, and the names of the grid's runs. Params (``flanmoe.config``), the stages, the
report, the flow and its UI form import them from here; nothing here imports the rest of the project.

Run names (the folder of a model under ``models/<stage>/s<seed>/`` and of its metrics):

- pretrain, instruct: ``<arch>``; their evaluations (scenario ``it_zero_few``): ``<arch>-<model>``;
- finetune: ``<arch>-<task>-<scenario>``, and for the freezing ablation
  ``<arch>-<task>-after_it-freeze_<option>`` (dvc.yaml spells the same templates).
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, get_args

# The paper's fine-tuning scenarios: 1 = from the pretrained model, 3 = from the instruction-tuned one
Scenario = Literal["direct", "after_it"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
INIT_STAGE: dict[str, str] = {
    "direct": "pretrain",
    "after_it": "instruct",
}  # the model a scenario starts from
SCENARIO_LABEL: dict[str, str] = {"direct": "direct", "after_it": "after IT"}
IT_ZERO_FEW = "it_zero_few"  # scenario 2: the pretrained / instruction-tuned model on held-out suites
EVAL_MODELS: tuple[str, ...] = ("pretrain", "instruct")  # the models scenario 2 compares

# The freezing ablation: what an after-IT fine-tune keeps frozen (gate = routers, experts = expert
# FFNs, non_moe = every other parameter); "none" is the plain fine-tune it is compared with.
FreezeOption = Literal["none", "gate", "experts", "non_moe"]
FREEZE_OPTIONS: tuple[str, ...] = get_args(FreezeOption)
AblationFreeze = Literal["gate", "experts", "non_moe"]
ABLATION_FREEZES: tuple[str, ...] = get_args(AblationFreeze)
FREEZE_SCENARIO_PREFIX = "after_it-freeze_"  # the ablation's scenarios in the report: after_it-freeze_gate

# Evaluation: the held-out suites (the paper's normalized average is over these), the held-in pairs and
# the knowledge probe (embedded corpus only; outside the average, in its own modes: PROBE_MODES)
Suite = Literal["mmlu", "bbh", "heldin", "probe"]
SUITES: tuple[str, ...] = get_args(Suite)
HELDOUT: tuple[str, ...] = ("mmlu", "bbh")
Mode = Literal["zero_shot", "few_shot"]
MODES: tuple[str, ...] = get_args(Mode)
MODE_LABEL: dict[str, str] = {"zero_shot": "zero-shot", "few_shot": "few-shot"}
# the probe's modes: the fact as the corpus's own span-corruption cloze, the question with the answer
# as that cloze's span, or the bare question
ProbeMode = Literal["cloze", "qa", "question"]
PROBE_MODES: tuple[str, ...] = get_args(ProbeMode)


def freeze_scenario(option: str) -> str:
    """The freezing ablation's scenario name of ``option`` (``after_it-freeze_gate``)."""
    return f"{FREEZE_SCENARIO_PREFIX}{option}"


def scenario_label(scenario: str) -> str:
    """``direct``, ``after IT``, ``after IT, gate frozen`` (the freezing ablation)."""
    if scenario.startswith(FREEZE_SCENARIO_PREFIX):
        return f"after IT, {scenario.removeprefix(FREEZE_SCENARIO_PREFIX).replace('_', '-')} frozen"
    return SCENARIO_LABEL.get(scenario, scenario)


class FinetuneRun(NamedTuple):
    """One fine-tuning run of the grid; ``freeze`` is None outside the freezing ablation."""

    arch: str
    task: str
    scenario: str
    freeze: str | None = None

    @property
    def name(self) -> str:
        """``<arch>-<task>-<scenario>[-freeze_<option>]``."""
        base = f"{self.arch}-{self.task}-{self.scenario}"
        return base if self.freeze is None else f"{base}-freeze_{self.freeze}"

    @property
    def report_scenario(self) -> str:
        """The scenario the report files it under (the ablation's: ``after_it-freeze_<option>``)."""
        return self.scenario if self.freeze is None else freeze_scenario(self.freeze)


_FINETUNE_RUN = re.compile(
    rf"(?P<arch>[^-]+)-(?P<task>.+)-(?P<scenario>{'|'.join(SCENARIOS)})(?:-freeze_(?P<freeze>\w+))?"
)


def parse_finetune_run(name: str) -> FinetuneRun | None:
    """The run a fine-tuning name (``switch-list_sum-after_it-freeze_gate``) stands for; None when
    ``name`` is not one."""
    m = _FINETUNE_RUN.fullmatch(name)
    return None if m is None else FinetuneRun(m["arch"], m["task"], m["scenario"], m["freeze"])


def finetune_runs(
    arch: str, tasks: list[str], scenarios: list[str], ablation: list[str] | tuple[str, ...] = ()
) -> list[FinetuneRun]:
    """Every fine-tuning run of ``arch``: each task in each scenario, then (``ablation``: the freeze
    options when ``arch`` is in the freezing ablation) each task after IT with each option frozen."""
    runs = [FinetuneRun(arch, t, s) for t in tasks for s in scenarios]
    return runs + [FinetuneRun(arch, t, "after_it", f) for t in tasks for f in ablation]


def eval_name(arch: str, model: str) -> str:
    """The name of scenario 2's evaluation of ``arch`` after stage ``model`` (``switch-instruct``)."""
    return f"{arch}-{model}"


__all__ = [
    "ABLATION_FREEZES",
    "EVAL_MODELS",
    "FREEZE_OPTIONS",
    "FREEZE_SCENARIO_PREFIX",
    "HELDOUT",
    "INIT_STAGE",
    "IT_ZERO_FEW",
    "MODES",
    "MODE_LABEL",
    "PROBE_MODES",
    "SCENARIOS",
    "SCENARIO_LABEL",
    "SUITES",
    "AblationFreeze",
    "FinetuneRun",
    "FreezeOption",
    "Mode",
    "ProbeMode",
    "Scenario",
    "Suite",
    "eval_name",
    "finetune_runs",
    "freeze_scenario",
    "parse_finetune_run",
    "scenario_label",
]
