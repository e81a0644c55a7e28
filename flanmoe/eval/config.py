"""Params of the evaluate stage (params.yaml ``evaluate``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from flanmoe.grid import Suite
from flanmoe.params_base import StrictModel


class EvaluateConfig(StrictModel):
    """How models are scored: which suites, prompt format, shots, batching, CIs, device."""

    # keys that change no score (dvc.yaml leaves them out of the evaluation stages' params)
    NO_RESULT_KEYS: ClassVar[frozenset[str]] = frozenset({"threads"})

    # held-out + held-in; "probe": the knowledge probe (needs data/tokenized/probe: embedded corpus only)
    suites: list[Suite] = Field(default_factory=lambda: ["mmlu", "bbh", "heldin"])
    fewshot_k: int = Field(3, ge=1)  # exemplars in few-shot prompts (MMLU: from dev, same subject)
    mmlu_format: Literal["options", "letters", "question"] = (
        "options"  # FLAN OPTIONS block, (A) letters, bare
    )
    mmlu_split: str = "test"  # the MMLU split scored (dev gives the exemplars)
    mc_headline: Literal["sum", "mean"] = "sum"  # headline MC accuracy: summed or per-token log-prob
    max_input_length: int | None = Field(None, ge=2)  # prompt tokens; None = tokenize.max_input_length
    max_new_tokens: int = Field(32, ge=1)  # greedy generation length cap
    batch_size: int = Field(32, ge=1)  # prompts per batch (MC: all their options together)
    heldin_examples: int | None = Field(None, ge=1)  # held-in pairs scored, of instruct's validation
    # split (never trained on); None: all of them (instruct.val_examples)
    max_labels: int = Field(16, ge=2)  # a fine-tuning task with at most this many distinct targets is
    # scored as classification (rank the labels by log-likelihood: accuracy); else exact match. A real
    # BBH task without options in its inputs and with this many at most: chance 1/labels, else 0
    dropless: bool = True  # route every token (no capacity): scores independent of batch composition
    bootstrap: int = Field(1000, ge=0)  # bootstrap resamples for the confidence intervals (0: none)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int | None = None  # exemplar draws and bootstrap; None = base.seed
    max_examples: int | None = Field(None, ge=1)  # per task, for quick looks; None = all
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None = torch's default
