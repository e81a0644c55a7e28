"""Params of one training stage (pretrain now; instruct and finetune reuse it): the optimizer, the
schedule, batching, evaluation, checkpoints, and how the run is laid out on devices.

Batch semantics: one optimizer step consumes one *global* batch, cut into ``nproc * grad_accum``
micro-batches ("groups"); each group is one MoE routing group. So ``(nproc 2, grad_accum 1)`` and
``(nproc 1, grad_accum 2)`` compute the same thing, and a checkpoint resumes at another world size.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from flanmoe.grid import FreezeOption, Scenario
from flanmoe.params_base import StrictModel
from flanmoe.train.mixture import MixtureConfig


class ParallelConfig(StrictModel):
    """Devices and parallelism. ``nproc > 1`` re-launches the stage under ``torchrun --standalone``."""

    nproc: int = Field(1, ge=1)  # processes on this node (torchrun --nproc_per_node); 1 = in-process
    ep: int = Field(1, ge=1)  # expert-parallel degree: divides nproc and every MoE arch's num_experts
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available (NCCL), else cpu (gloo)
    dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16: autocast on GPU (fp32 master weights)
    activation_checkpointing: bool = False  # recompute each block in backward (memory for compute)
    compile: bool = False  # torch.compile per block; MoE layers run eager (data-dependent token counts)
    threads: int | None = Field(None, ge=1)  # torch CPU threads per process; None = torch's default

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.nproc % self.ep != 0:
            raise ValueError(f"ep: {self.ep} does not divide nproc {self.nproc}")
        return self


class TrainConfig(StrictModel):
    """One training stage: steps, batches, optimizer, schedule, evaluation, checkpoints, parallelism."""

    # keys that change no result (a resume is exact; dvc.yaml leaves them out of the stages' params)
    NO_RESULT_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"log_every", "checkpoint_every", "keep_checkpoints", "parallel.threads"}
    )

    steps: int = Field(300, ge=0)  # optimizer steps (pretrain from an HF init: 0 = import and export)
    batch_size: int = Field(32, ge=1)  # examples per global batch (packed data)
    max_tokens: int = Field(4096, ge=16)  # token budget of one micro-batch (variable-length pairs)
    grad_accum: int = Field(1, ge=1)  # micro-batches per process and step
    optimizer: Literal["adamw", "adafactor"] = "adamw"  # adafactor: T5's (factored second moments)
    lr: float = Field(1e-3, gt=0)  # peak learning rate
    weight_decay: float = Field(0.0, ge=0)  # decoupled weight decay (T5: 0)
    beta1: float = Field(0.9, ge=0, lt=1)  # AdamW first moment
    beta2: float = Field(0.999, gt=0, lt=1)  # AdamW second moment (Adafactor: uses its own decay)
    schedule: Literal["constant", "inverse_sqrt", "cosine"] = "inverse_sqrt"  # after warmup (T5: rsqrt)
    warmup_steps: int = Field(30, ge=0)  # linear warmup from 0 to lr
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine: final lr / peak lr
    clip_grad_norm: float | None = Field(1.0, gt=0)  # global grad-norm clipping; null = off
    eval_every: int = Field(100, ge=1)  # validation loss every N steps (and at the end)
    val_examples: int = Field(256, ge=1)  # held-out examples for validation loss (pretraining set)
    log_every: int = Field(10, ge=1)  # metrics to MLflow / progress every N steps (one batch of values)
    checkpoint_every: int = Field(100, ge=1)  # resumable DCP checkpoint every N steps (and at the end)
    keep_checkpoints: int = Field(2, ge=1)  # newest checkpoints kept
    early_stopping_patience: int | None = Field(None, ge=1)  # stop after N evals without a better
    # validation loss and export the best model (null: train all steps, export the last)
    seed: int | None = Field(None, ge=0)  # init, data order, dropout; None = base.seed
    parallel: ParallelConfig = ParallelConfig()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        groups = self.parallel.nproc * self.grad_accum
        if self.batch_size % groups != 0:
            raise ValueError(
                f"batch_size: {self.batch_size} is not divisible by nproc x grad_accum = {groups} "
                "(each process and micro-batch takes an equal share of the global batch)"
            )
        if self.warmup_steps > self.steps > 0:
            raise ValueError(f"warmup_steps: {self.warmup_steps} > steps {self.steps}")
        return self

    @property
    def groups(self) -> int:
        """Micro-batches per global batch: ``nproc * grad_accum``."""
        return self.parallel.nproc * self.grad_accum


class InstructConfig(TrainConfig):
    """Instruction tuning: a ``TrainConfig`` over variable-length pairs (micro-batches under
    ``max_tokens``), plus how the instruction tasks are mixed."""

    steps: int = Field(200, ge=1)
    lr: float = Field(5e-4, gt=0)
    schedule: Literal["constant", "inverse_sqrt", "cosine"] = "constant"  # FLAN-T5: constant
    warmup_steps: int = Field(20, ge=0)
    mixture: MixtureConfig = MixtureConfig()


class FinetuneConfig(TrainConfig):
    """Single-task fine-tuning (the paper's scenarios 1 and 3): a ``TrainConfig`` over variable-length
    pairs, from the pretrained (``direct``) or the instruction-tuned (``after_it``) model."""

    tasks: list[str] = Field(default_factory=lambda: ["fact_verification", "list_sum"], min_length=1)
    scenarios: list[Scenario] = Field(
        default_factory=lambda: ["direct", "after_it"], min_length=1
    )  # direct: from pretrain; after_it: from instruct
    freeze: FreezeOption = "none"  # gate = routers, experts = expert FFNs, non_moe = the rest (MoE only)
    dropout_rate: float | None = Field(0.1, ge=0, lt=1)  # fine-tuning dropout (T5: 0.1); null: model's
    expert_dropout: float | None = Field(None, ge=0, lt=1)  # Switch fine-tuning: 0.4; null: model's
    steps: int = Field(150, ge=1)
    max_tokens: int = Field(2048, ge=16)
    lr: float = Field(5e-4, gt=0)
    schedule: Literal["constant", "inverse_sqrt", "cosine"] = "constant"
    warmup_steps: int = Field(10, ge=0)
    eval_every: int = Field(25, ge=1)
    early_stopping_patience: int | None = Field(3, ge=1)
