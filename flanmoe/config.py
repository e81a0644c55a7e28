"""Typed params: one pydantic model per params.yaml section, and the one loader that validates them.

Any problem (an unknown key, a wrong type, an out-of-range value, an invalid combination) becomes a
``ParamsError`` whose lines each name the dotted key, e.g. ``prepare.mmlu.path: required with kind
'hub'``. Stages call ``load_params_or_exit`` first thing, so bad params stop a run (exit status 2)
before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from flanmoe.data.config import EmbeddedConfig, SourceSpec, TokenizeConfig
from flanmoe.eval.config import EvaluateConfig
from flanmoe.grid import AblationFreeze
from flanmoe.model.config import ModelConfig, MoEConfig
from flanmoe.model.flops import dense_twin
from flanmoe.params_base import StrictModel, format_validation_error
from flanmoe.train.config import FinetuneConfig, InstructConfig, TrainConfig

DEFAULT_PARAMS = Path("params.yaml")


class BaseParams(StrictModel):
    """Shared by every stage."""

    seed: int = Field(
        default=1234, ge=0
    )  # data sampling (prepare); the seed of a stage run outside a replicate
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default=[1234], min_length=1)  # replicates (dvc matrix)
    # more replicates of extra_archs only, for pretrain, instruct and their evaluation (the headline)
    extra_seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    extra_archs: list[str] = Field(default_factory=lambda: ["dense", "switch"])  # archs of archs.run
    experiment: str = Field(default="flan-moe", min_length=1)  # MLflow experiment name

    @field_validator("seeds", "extra_seeds", "extra_archs")
    @classmethod
    def _unique(cls, v: list, info) -> list:
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise ValueError(f"{info.field_name} must be distinct; repeated: {dup}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> BaseParams:
        both = sorted(set(self.seeds) & set(self.extra_seeds))
        if both:
            raise ValueError(
                f"extra_seeds: {both} already in base.seeds {self.seeds} (extra seeds are more replicates)"
            )
        return self


class PrepareParams(StrictModel):
    """Stage `prepare`: where each source comes from, and the offline suite's options."""

    embedded: EmbeddedConfig = EmbeddedConfig()  # options of the offline suite (kind: embedded)
    pretrain: SourceSpec = SourceSpec()  # text corpus, C4 schema
    flan: SourceSpec = SourceSpec()  # instruction mixture, FLAN collection schema
    mmlu: SourceSpec = SourceSpec()  # held-out multiple choice, cais/mmlu schema
    bbh: SourceSpec = SourceSpec()  # held-out exact match, lukaemon/bbh schema
    finetune: SourceSpec = SourceSpec()  # single-task sets for scenarios 1 and 3


def _default_model() -> ModelConfig:
    return ModelConfig(preset="tiny", moe=MoEConfig())


HF_INIT_PREFIX = "hf:"


class ArchSpec(StrictModel):
    """One variant of the comparison: MoE settings over ``model.moe``, or a FLOPs-matched dense twin.

    ``init: hf:<dir or hub id>`` starts the arch's pretraining from a Hugging Face T5 / Switch
    checkpoint (``flanmoe.model.hf``): its model config then comes from the checkpoint, and
    ``moe`` / ``dense_twin_of`` only say whether the arch is MoE (and whose twin) for the report.
    """

    dense_twin_of: str | None = None  # dense model with the FFN FLOPs/token of this MoE arch
    moe: dict[str, Any] = Field(default_factory=dict)  # overrides of model.moe (router, top_k, ...)
    init: str = "scratch"  # scratch (seeded random init) | hf:<local dir or hub id> (import, then pretrain)

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v != "scratch" and not (v.startswith(HF_INIT_PREFIX) and v[len(HF_INIT_PREFIX) :].strip()):
            raise ValueError("expected 'scratch' or 'hf:<directory or hub id>'")
        return v

    @property
    def hf_init(self) -> str | None:
        """The directory or hub id of an ``hf:`` init, else None."""
        return self.init[len(HF_INIT_PREFIX) :].strip() if self.init.startswith(HF_INIT_PREFIX) else None


def _default_variants() -> dict[str, ArchSpec]:
    return {
        "dense": ArchSpec(dense_twin_of="switch"),  # T5: same FLOPs/token as switch (top-1)
        "switch": ArchSpec(moe={"router": "switch"}),  # Switch Transformer: top-1
        "gshard": ArchSpec(moe={"router": "gshard"}),  # GShard: top-2
        "expert_choice": ArchSpec(moe={"router": "expert_choice", "decoder_router": "gshard"}),  # FLAN-EC
        "st_moe": ArchSpec(moe={"router": "st_moe", "z_loss_coef": 1e-3}),  # top-2 + router z-loss
    }


class ArchsParams(StrictModel):
    """The variants to compare, and which of them the pipeline trains."""

    run: list[str] = Field(default_factory=lambda: ["dense", "switch"], min_length=1)  # dvc foreach
    variants: dict[str, ArchSpec] = Field(default_factory=_default_variants)


class FreezeAblationParams(StrictModel):
    """The paper's freezing ablation: for each arch and freeze option, an extra after-IT fine-tune of
    every task (dvc.yaml ``finetune_freeze``), compared with the plain after-IT fine-tune."""

    archs: list[str] = Field(default_factory=list)  # MoE archs of archs.run
    freeze: list[AblationFreeze] = Field(default_factory=list)


class ReportParams(StrictModel):
    """Stage `report`: where the report goes (git-tracked, beside the code)."""

    dir: str = Field(default="docs/report", pattern=r"^docs/[A-Za-z0-9_.-]+$")  # docs/<name>


class Params(StrictModel):
    """The whole params.yaml."""

    base: BaseParams = BaseParams()
    prepare: PrepareParams = PrepareParams()
    tokenize: TokenizeConfig = TokenizeConfig()
    model: ModelConfig = Field(default_factory=_default_model)  # backbone (+ shared MoE defaults)
    archs: ArchsParams = ArchsParams()
    pretrain: TrainConfig = TrainConfig()
    instruct: InstructConfig = InstructConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    freeze_ablation: FreezeAblationParams = FreezeAblationParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _check_archs(self) -> Params:
        ab = self.freeze_ablation
        for name in ab.archs:
            if name not in self.archs.run:
                raise ValueError(f"freeze_ablation.archs: {name!r} is not in archs.run {self.archs.run}")
        if ab.archs and ab.freeze:
            if "after_it" not in self.finetune.scenarios:
                raise ValueError(
                    "freeze_ablation: compares with scenario after_it; add it to finetune.scenarios"
                )
            if self.finetune.freeze != "none":
                raise ValueError(
                    f"freeze_ablation: compares with the unfrozen fine-tune; finetune.freeze is "
                    f"{self.finetune.freeze!r} (set it to none)"
                )
        held_in = self.evaluate.heldin_examples
        if "heldin" in self.evaluate.suites and held_in is not None and held_in > self.instruct.val_examples:
            raise ValueError(
                f"evaluate.heldin_examples: {held_in} > instruct.val_examples {self.instruct.val_examples} "
                "(the held-in pairs are the instruct stage's validation split); lower it, or null for all of them"
            )
        if self.base.extra_seeds:  # without extra seeds the list is inert: archs.run may leave its archs out
            for name in self.base.extra_archs:
                if name not in self.archs.run:
                    raise ValueError(f"base.extra_archs: {name!r} is not in archs.run {self.archs.run}")
        for name in self.archs.run:
            if name not in self.archs.variants:
                raise ValueError(f"archs.run: unknown arch {name!r}; defined: {sorted(self.archs.variants)}")
        self._check_inits()
        for name in self.archs.variants:
            cfg = self._resolve(name, [])  # raises with the arch's dotted key
            if name in ab.archs and cfg.moe is None:
                raise ValueError(f"freeze_ablation.archs: {name!r} is dense; freezing needs an MoE arch")
            if self.finetune.freeze != "none" and name in self.archs.run and cfg.moe is None:
                raise ValueError(
                    f"finetune.freeze: {self.finetune.freeze!r} needs MoE archs, but archs.run has the dense "
                    f"arch {name!r} (a dense model accepts only 'none')"
                )
            for stage in ("pretrain", "instruct", "finetune"):
                ep = getattr(self, stage).parallel.ep
                if name in self.archs.run and cfg.moe is not None and cfg.moe.num_experts % ep != 0:
                    raise ValueError(
                        f"{stage}.parallel.ep: {ep} does not divide num_experts {cfg.moe.num_experts} "
                        f"of arch {name!r}"
                    )
        return self

    def _check_inits(self) -> None:
        """An HF init needs that checkpoint's tokenizer; ``pretrain.steps: 0`` (import and export
        only) needs an HF init for every arch that runs."""
        hf = [n for n in self.archs.run if self.archs.variants[n].hf_init is not None]
        if hf and self.tokenize.tokenizer_path is None:
            raise ValueError(
                f"tokenize.tokenizer_path: arch {hf[0]!r} starts from {self.archs.variants[hf[0]].init} "
                f"(archs.variants.{hf[0]}.init); set tokenize.tokenizer_path to that checkpoint's tokenizer"
            )
        scratch = [n for n in self.archs.run if n not in hf]
        if self.pretrain.steps == 0 and scratch:
            raise ValueError(
                f"pretrain.steps: 0 (import and export only) needs an hf: init for every arch of archs.run; "
                f"{scratch[0]!r} starts from scratch (archs.variants.{scratch[0]}.init)"
            )

    def _resolve(self, name: str, seen: list[str]) -> ModelConfig:
        key = f"archs.variants.{name}"
        if name in seen:
            raise ValueError(f"{key}.dense_twin_of: circular reference {' -> '.join([*seen, name])}")
        spec = self.archs.variants[name]
        if spec.dense_twin_of is not None:
            if spec.moe:
                raise ValueError(f"{key}.moe: a dense twin takes no MoE settings")
            if spec.dense_twin_of not in self.archs.variants:
                raise ValueError(f"{key}.dense_twin_of: unknown arch {spec.dense_twin_of!r}")
            try:
                return dense_twin(self._resolve(spec.dense_twin_of, [*seen, name]))
            except ValueError as e:
                if str(e).startswith("archs."):
                    raise
                raise ValueError(f"{key}.dense_twin_of: {e}") from None
        if self.model.moe is None:
            if spec.moe:
                raise ValueError(f"{key}.moe: model.moe is null (dense backbone); set model.moe to use MoE")
            return self.model
        try:
            moe = MoEConfig.model_validate({**self.model.moe.model_dump(), **spec.moe})
        except ValidationError as e:
            raise ValueError(format_validation_error(e, f"{key}.moe")[0]) from None
        return self.model.model_copy(update={"moe": moe})

    def seeds_of(self, arch: str) -> list[int]:
        """The replicates of ``arch``'s pretrain, instruct and their evaluation: ``base.seeds``, then
        ``base.extra_seeds`` for an arch of ``base.extra_archs`` (fine-tuning runs ``base.seeds`` only)."""
        extra = self.base.extra_seeds if arch in self.base.extra_archs else []
        return [*self.base.seeds, *extra]

    def for_seed(self, seed: int) -> Params:
        """These params as one replicate of ``base.seeds`` sees them: ``base.seed`` is the replicate's
        seed (the fallback of every stage's ``seed: null``: init, data order, dropout, exemplar draws)."""
        return self.model_copy(update={"base": self.base.model_copy(update={"seed": seed})})

    def arch_config(self, name: str) -> ModelConfig:
        """The ``ModelConfig`` of arch ``name``: ``model`` with the arch's MoE settings, or its dense twin."""
        if name not in self.archs.variants:
            raise KeyError(f"arch: unknown arch {name!r}; defined: {sorted(self.archs.variants)}")
        return self._resolve(name, [])


class ParamsError(ValueError):
    """Invalid params: ``lines`` each name a dotted key (or the file) and what is wrong."""

    def __init__(self, source: str, lines: list[str]):
        self.source = source
        self.lines = lines
        super().__init__(f"{source}: invalid params:\n" + "\n".join(f"  {ln}" for ln in lines))


def parse_params(data: object, source: str = "<params>") -> Params:
    """Validate a parsed params mapping; raise ``ParamsError`` naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(source, [f"<root>: must be a mapping of sections, got {type(data).__name__}"])
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(source, format_validation_error(e)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params.yaml file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(str(path), [f"{path}: file not found"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(str(path), [f"{path}: not valid YAML: {e}"]) from None
    return parse_params(data, str(path))


def load_params_or_exit(path: str | Path = DEFAULT_PARAMS) -> Params:
    """``load_params``, or print the error and exit with status 2 (for stage entry points)."""
    try:
        return load_params(path)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def flatten(obj: object, prefix: str = "", sep: str = ".") -> dict[str, object]:
    """Nested params (or dicts) as ``{"a.b.c": value}`` (MLflow params; ``sep="/"`` for metrics)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}{sep}", sep))
    else:
        out[prefix.removesuffix(sep)] = obj
    return out
