"""The data params (params.yaml ``prepare`` and ``tokenize``): pydantic only, so that validating
params.yaml imports neither ``datasets`` nor the tokenizer (``flanmoe.config`` reads them before any
stage has decided what it needs). The modules that use them re-export them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from flanmoe.data.span_corruption import noise_span_counts, random_spans_helper
from flanmoe.params_base import StrictModel

SourceKind = Literal["embedded", "hub", "local"]
# where an instruction's answer goes (flanmoe.data.answer_slot); here, so params load without a tokenizer
AnswerForm = Literal["plain", "sentinel"]


class SourceSpec(StrictModel):
    """Where one source's data comes from."""

    kind: SourceKind = "embedded"  # embedded (offline suite) | hub (dataset id) | local (file or dir)
    path: str | None = None  # hub id (cais/mmlu) or local path; may contain {config} and {split}
    name: str | None = None  # dataset config (cais/mmlu: "all"); per-task roles use `configs`
    configs: list[str] | None = None  # bbh/finetune: one config per task (the task names)
    split: str | None = None  # single-split roles: which split of the source to read (default train)
    revision: str | None = None  # hub: a commit sha or tag of the dataset repo, for reproducibility
    field: str | None = None  # json files whose records sit under a key (real BBH files: "examples")
    max_examples: int | None = Field(default=None, gt=0)  # cap per split (per task), for fast runs

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if self.kind == "embedded":
            for key in ("path", "name", "configs", "split", "field", "revision"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: not used with kind 'embedded' (remove it)")
        elif not self.path:
            raise ValueError(f"path: required with kind '{self.kind}'")
        if self.revision is not None and self.kind != "hub":
            raise ValueError(f"revision: only for kind 'hub' (this source is '{self.kind}')")
        if self.configs is not None and not self.configs:
            raise ValueError("configs: must list at least one config")
        return self


class EmbeddedConfig(StrictModel):
    """Options of the embedded suite (params.yaml ``prepare.embedded``)."""

    seed: int = 1234  # the whole suite is a function of this seed: same seed -> same bytes
    pretrain_mb: float = Field(default=5.0, gt=0)  # pretraining corpus size, MB of UTF-8 text (1e6 bytes)
    real_fraction: float = Field(default=0.25, ge=0, le=1)  # share of shipped English (pydoc, docstrings)
    task_fraction: float = Field(default=0.25, ge=0, le=1)  # share of instruction-free family raw material
    world_size: int = Field(default=30, ge=4)  # cities, animals, elements each (countries: half)
    it_people: int = Field(default=100, ge=1)  # people the instruction mixture asks about
    heldout_people: int = Field(default=200, ge=1)  # people only the corpus's biographies tell of
    bio_exposures: list[int] = Field(default_factory=lambda: [12, 48], min_length=1)  # biographies per
    # person, one exposure stratum per value (people of each group assigned round robin)
    flan_per_family: int = Field(default=400, gt=0)  # examples per instruction family
    it_qa_per_person: int = Field(default=0, ge=0)  # QA documents per IT person in the pretraining
    # corpus (Physics of LMs 3.1's mixed training; 0: none)
    people_qa_per_family: int | None = Field(default=None, gt=0)  # ... per person family (QA about IT
    # people); None: flan_per_family
    fewshot_k: int = Field(default=2, ge=1)  # exemplars in few-shot templates
    fewshot_fraction: float = Field(default=0.3, ge=0, le=1)  # share of few-shot (fs_*) examples
    options_fraction: float = Field(default=0.5, ge=0, le=1)  # share of examples with OPTIONS (*_opt)
    letter_fraction: float = Field(default=0.3, ge=0, le=1)  # of *_opt: share with (A) options, letter target
    mmlu_per_subject: int = Field(default=40, gt=0)  # test questions per MMLU-style subject
    mmlu_val_per_subject: int = Field(default=10, ge=0)  # validation questions per subject (dev is 5)
    bbh_per_task: int = Field(default=50, gt=0)  # examples per BBH-style task (split test)
    bbh_steps: int = Field(default=2, ge=1, le=8)  # BBH difficulty: operators, moves, words, brackets
    finetune_train: int = Field(default=1000, gt=0)  # train examples per fine-tuning task
    finetune_eval: int = Field(default=100, gt=0)  # validation and test examples per fine-tuning task
    max_operand: int = Field(default=20, ge=3)  # arithmetic difficulty: largest operand
    list_len: int = Field(default=4, ge=3, le=10)  # sequence difficulty: longest list

    @model_validator(mode="after")
    def _check(self) -> EmbeddedConfig:
        if self.real_fraction + self.task_fraction > 1:
            raise ValueError("task_fraction: real_fraction + task_fraction must be at most 1")
        if any(n < 1 for n in self.bio_exposures) or len(set(self.bio_exposures)) != len(self.bio_exposures):
            raise ValueError(f"bio_exposures: distinct counts >= 1 wanted (got {self.bio_exposures})")
        strata = len(self.bio_exposures)
        if min(self.it_people, self.heldout_people) < strata:
            raise ValueError(
                f"heldout_people: it_people and heldout_people must each be at least the number of strata "
                f"({strata}) so that every stratum has people of both groups"
            )
        return self


class TokenizeConfig(StrictModel):
    """Stage `tokenize`: tokenizer, span corruption and truncation lengths."""

    # keys that change no output (dvc.yaml leaves them out of the stage's params)
    NO_RESULT_KEYS: ClassVar[frozenset[str]] = frozenset({"num_proc", "batch_size"})

    kind: Literal["bpe", "unigram"] = "bpe"  # byte-level BPE (exact round trip) or unigram (T5's kind)
    vocab_size: int = Field(default=8000, ge=300, le=1_000_000)  # specials and sentinels included
    num_sentinels: int = Field(default=100, ge=1, le=1000)  # <extra_id_0..n-1> (trained: ids 3..n+2)
    tokenizer_path: str | None = None  # an existing tokenizer.json (file or dir, e.g. HF T5's); None = train
    tokenizer_train_mb: float = Field(default=20.0, gt=0)  # MB of pretraining text to train it on
    noise_density: float = Field(default=0.15, gt=0, lt=1)  # fraction of tokens masked (T5: 0.15)
    mean_noise_span_length: float = Field(default=3.0, ge=1)  # mean masked span length (T5: 3)
    input_length: int = Field(default=128, ge=8, le=65536)  # encoder length of pretraining examples
    target_length: int = Field(default=32, ge=4, le=65536)  # decoder length of pretraining examples
    max_input_length: int = Field(default=512, ge=2, le=65536)  # instruction/finetune inputs truncation
    max_target_length: int = Field(default=128, ge=2, le=65536)  # instruction/finetune targets truncation
    num_proc: int = Field(default=1, ge=1, le=256)  # datasets.map processes (encode_batch is threaded)
    batch_size: int = Field(default=1000, ge=1)  # rows per datasets.map batch
    seed: int = Field(default=1234, ge=0)  # noise masks; output is independent of num_proc/batch_size
    # share of raw chunks whose salient spans (prepared `salient_spans`) are masked instead of random ones
    salient_fraction: float = Field(default=0.0, ge=0, le=1)
    # stream: T5's packing (documents end to end, cut into chunks); document: every document starts a
    # chunk, its last chunk padded (no chunk holds two documents)
    packing: Literal["stream", "document"] = "stream"
    # plain: FLAN's pairs (inputs -> answer); sentinel: inputs end with <extra_id_0>, the answer is
    # written as its span (<extra_id_0> answer <extra_id_1>), the form span corruption teaches
    # (flanmoe/data/answer_slot.py); the evaluate stage scores in the same form
    answer_form: AnswerForm = "plain"

    @model_validator(mode="after")
    def _check(self) -> TokenizeConfig:
        if self.kind == "bpe" and self.vocab_size <= 3 + self.num_sentinels + 256:
            raise ValueError(
                f"vocab_size: byte-level BPE needs more than 3 + num_sentinels + 256 = "
                f"{3 + self.num_sentinels + 256} (got {self.vocab_size})"
            )
        if self.answer_form == "sentinel" and self.num_sentinels < 2:
            raise ValueError(
                f"answer_form: 'sentinel' needs num_sentinels >= 2 (<extra_id_0> and <extra_id_1>; "
                f"got {self.num_sentinels})"
            )
        raw, targets = self.raw_and_target_lengths()
        if targets > self.target_length:
            raise ValueError(
                f"target_length: span corruption of {raw} tokens (input_length {self.input_length}) "
                f"gives {targets}-token targets; set target_length >= {targets}"
            )
        spans = noise_span_counts(raw, self.noise_density, self.mean_noise_span_length)[1]
        if spans > self.num_sentinels:
            raise ValueError(
                f"num_sentinels: {spans} noise spans per pretraining example need >= {spans} sentinels "
                f"(got {self.num_sentinels})"
            )
        return self

    def raw_and_target_lengths(self) -> tuple[int, int]:
        """(raw chunk length before corruption, targets length after it, eos included)."""
        return random_spans_helper(self.input_length, self.noise_density, self.mean_noise_span_length)
