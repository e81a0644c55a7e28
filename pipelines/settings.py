"""The Prefect UI form: one pydantic model whose fields are the settings a researcher changes most.

Every field left empty keeps params.yaml's value; a filled field becomes a params override (dotted key)
of a DVC experiment. ``Literal`` fields render as dropdowns and ``Field`` descriptions as help text.
The overrides then go through the same validation as params.yaml (``flanmoe.config.parse_params``)
before anything runs, so an invalid combination (e.g. an expert-parallel degree that does not divide
the number of experts, or a freeze option with a dense arch) is refused with the dotted key named.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Arch = Literal["dense", "switch", "gshard", "expert_choice", "st_moe"]
Preset = Literal["tiny", "mini", "small", "base"]
Freeze = Literal["none", "gate", "experts", "non_moe"]
FinetuneTask = Literal["fact_verification", "list_sum", "entity_typing", "acronym"]
Scenario = Literal["direct", "after_it"]

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
