"""The Prefect UI form: one pydantic model whose fields are the settings a researcher changes most.

Every field left empty keeps params.yaml's value; a filled field becomes a params override (dotted key)
of a DVC experiment. ``Literal`` fields render as dropdowns and ``Field`` descriptions as help text.
The overrides then go through the same validation as params.yaml (``flanmoe.config.parse_params``)
before anything runs, so an invalid combination (e.g. an expert-parallel degree that does not divide
the number of experts, or a freeze option with a dense arch) is refused with the dotted key named.

The dropdowns' choices come from the code's vocabulary (``flanmoe.grid``, the model presets) and from
params.yaml, read when this module is imported: its ``archs.variants`` and its fine-tuning tasks
(``finetune.tasks``, the configs of a local or hub ``prepare.finetune`` source, and the embedded suite's
tasks when that is the source). A new variant or task appears in the form after restarting ``make ui``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from flanmoe.data.embedded import CHANCE
from flanmoe.grid import FreezeOption as Freeze
from flanmoe.grid import Scenario
from flanmoe.model.config import PRESETS

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def form_choices(params_file: Path = PARAMS_FILE) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The archs and the fine-tuning tasks the form offers: params.yaml's ``archs.variants`` (the
    defaults of ``flanmoe.config`` when it names none) and every task a fine-tune can use with its data
    sources. A params.yaml that cannot be read gives the defaults (the flow reports its errors)."""
    from flanmoe.config import ArchsParams

    try:
        data = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    data = data if isinstance(data, dict) else {}
    section = lambda name: data.get(name) if isinstance(data.get(name), dict) else {}  # noqa: E731
    variants = section("archs").get("variants")
    archs = tuple(variants) if isinstance(variants, dict) and variants else tuple(ArchsParams().variants)
    tasks = [t for t in section("finetune").get("tasks") or [] if isinstance(t, str)]
    source = section("prepare").get("finetune")
    source = source if isinstance(source, dict) else {}
    if source.get("kind", "embedded") == "embedded":
        tasks += list(CHANCE["finetune"])
    tasks += [t for t in source.get("configs") or [] if isinstance(t, str)]
    return archs, tuple(dict.fromkeys(tasks)) or tuple(CHANCE["finetune"])


ARCHS, FINETUNE_TASKS = form_choices()
Arch = Literal[ARCHS]  # type: ignore[valid-type] - the choices of params.yaml, fixed at import
FinetuneTask = Literal[FINETUNE_TASKS]  # type: ignore[valid-type]
Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]

TRAINING = ("pretrain", "instruct", "finetune")

# form field -> params.yaml dotted key (a tuple: the value goes to each)
KEYS: dict[str, str | tuple[str, ...]] = {
    "archs": "archs.run",
    "preset": "model.preset",
    "num_experts": "model.moe.num_experts",
    "moe_every": "model.moe.moe_every",
    "capacity_factor_train": "model.moe.capacity_factor_train",
    "capacity_factor_eval": "model.moe.capacity_factor_eval",
    "dropless": "model.moe.dropless",
    "load_balance_coef": "model.moe.load_balance_coef",
    "z_loss_coef": "model.moe.z_loss_coef",
    "seeds": "base.seeds",
    "extra_seeds": "base.extra_seeds",
    "extra_archs": "base.extra_archs",
    "pretrain_steps": "pretrain.steps",
    "pretrain_lr": "pretrain.lr",
    "instruct_steps": "instruct.steps",
    "instruct_lr": "instruct.lr",
    "finetune_tasks": "finetune.tasks",
    "finetune_scenarios": "finetune.scenarios",
    "freeze": "finetune.freeze",
    "expert_dropout": "finetune.expert_dropout",
    "finetune_steps": "finetune.steps",
    "finetune_lr": "finetune.lr",
    "fewshot_k": "evaluate.fewshot_k",
    "nproc": tuple(f"{s}.parallel.nproc" for s in TRAINING),
    "expert_parallel": tuple(f"{s}.parallel.ep" for s in TRAINING),
}


class RunSettings(BaseModel):
    """A pipeline run's settings (empty = params.yaml's value)."""

    model_config = ConfigDict(extra="forbid")

    experiment_name: str | None = Field(
        None, description="DVC experiment name (dvc exp run -n) and MLflow parent run name; empty: generated"
    )
    archs: list[Arch] | None = Field(
        None,
        description="archs.run: the archs trained and compared (dense is the FLOPs-matched twin of switch)",
    )
    preset: Preset | None = Field(
        None, description="model.preset: backbone shape (tiny runs on a laptop CPU)"
    )
    num_experts: int | None = Field(None, ge=1, description="model.moe.num_experts: experts per MoE layer")
    moe_every: int | None = Field(
        None, ge=1, description="model.moe.moe_every: every N-th FFN is an MoE layer"
    )
    capacity_factor_train: float | None = Field(
        None, gt=0, description="model.moe.capacity_factor_train: token-choice slots per expert in training"
    )
    capacity_factor_eval: float | None = Field(
        None, gt=0, description="model.moe.capacity_factor_eval: ... in evaluation"
    )
    dropless: bool | None = Field(None, description="model.moe.dropless: no capacity, no dropped tokens")
    load_balance_coef: float | None = Field(
        None, ge=0, description="model.moe.load_balance_coef: Switch load-balancing loss weight"
    )
    z_loss_coef: float | None = Field(None, ge=0, description="model.moe.z_loss_coef: router z-loss weight")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="base.seeds: replicates; every training and evaluation stage runs once per seed",
    )
    extra_seeds: list[int] | None = Field(
        None,
        description="base.extra_seeds: more replicates of extra_archs only (pretrain, instruct and their "
        "evaluation: the headline's power); not in base.seeds",
    )
    extra_archs: list[Arch] | None = Field(
        None, description="base.extra_archs: the archs (of archs.run) that run extra_seeds"
    )
    pretrain_steps: int | None = Field(None, ge=1, description="pretrain.steps")
    pretrain_lr: float | None = Field(None, gt=0, description="pretrain.lr: peak learning rate")
    instruct_steps: int | None = Field(None, ge=1, description="instruct.steps")
    instruct_lr: float | None = Field(None, gt=0, description="instruct.lr")
    finetune_tasks: list[FinetuneTask] | None = Field(
        None, description="finetune.tasks: single-task fine-tuning sets (embedded suite)"
    )
    finetune_scenarios: list[Scenario] | None = Field(
        None, description="finetune.scenarios: direct (from pretrain) and/or after_it (from instruct)"
    )
    freeze: Freeze | None = Field(
        None, description="finetune.freeze: the paper's ablation (MoE archs only; dense accepts none)"
    )
    expert_dropout: float | None = Field(
        None, ge=0, lt=1, description="finetune.expert_dropout: dropout on expert hidden units"
    )
    finetune_steps: int | None = Field(
        None, ge=1, description="finetune.steps (early stopping may end sooner)"
    )
    finetune_lr: float | None = Field(None, gt=0, description="finetune.lr")
    fewshot_k: int | None = Field(None, ge=1, description="evaluate.fewshot_k: exemplars in few-shot prompts")
    nproc: int | None = Field(
        None, ge=1, description="{pretrain,instruct,finetune}.parallel.nproc: processes (>1: torchrun)"
    )
    expert_parallel: int | None = Field(
        None,
        ge=1,
        description="{pretrain,instruct,finetune}.parallel.ep: expert-parallel degree (divides nproc and "
        "num_experts)",
    )

    def overrides(self) -> dict[str, Any]:
        """The filled fields as params.yaml dotted keys."""
        out: dict[str, Any] = {}
        for field, value in self.model_dump().items():
            if field in KEYS and value is not None:
                keys = KEYS[field]
                out.update(dict.fromkeys((keys,) if isinstance(keys, str) else keys, value))
        return out
