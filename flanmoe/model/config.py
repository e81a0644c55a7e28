"""Params of the model: backbone shapes (``ModelConfig``) and the MoE layers (``MoEConfig``).

``ModelConfig.preset`` names a shape (``tiny``, ``mini``, ``small``, ``base``); any shape field
given explicitly overrides the preset's value. ``vocab_size`` may stay ``None`` here: the
tokenizer gives it at build time (``build_model(cfg, vocab_size=...)``).

``arch_presets()`` maps the paper's arch names (dense, switch, gshard, expert_choice, st_moe) to
the ``moe`` section, so that params.yaml can pick a variant per arch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from flanmoe.params_base import StrictModel

RouterName = Literal["switch", "gshard", "top_k", "expert_choice", "st_moe"]
FFNActivation = Literal["gated_gelu", "relu"]  # T5.1.1 gated GELU (3 matrices); T5 v1.0/Switch ReLU (2)

# k of each token-choice router; "top_k" takes MoEConfig.top_k, expert_choice has no k.
ROUTER_TOP_K: dict[str, int] = {"switch": 1, "gshard": 2, "st_moe": 2}

# Shapes of the named presets. base = T5.1.1-base, small = T5.1.1-small.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=128, d_ff=512, num_heads=4, d_kv=32, num_encoder_layers=2, num_decoder_layers=2),
    "mini": dict(d_model=256, d_ff=1024, num_heads=4, d_kv=64, num_encoder_layers=4, num_decoder_layers=4),
    "small": dict(d_model=512, d_ff=1024, num_heads=6, d_kv=64, num_encoder_layers=8, num_decoder_layers=8),
    "base": dict(d_model=768, d_ff=2048, num_heads=12, d_kv=64, num_encoder_layers=12, num_decoder_layers=12),
}
SHAPE_FIELDS = tuple(PRESETS["tiny"])


class MoEConfig(StrictModel):
    """Where the MoE layers sit, how tokens are routed, and the auxiliary losses."""

    num_experts: int = Field(8, ge=1)  # experts per MoE layer (paper: 64 for base models; Switch up to 128)
    moe_every: int = Field(2, ge=1)  # every moe_every-th FFN is MoE (paper: 2; ST-MoE: 4)
    moe_offset: int | None = Field(
        None, ge=0
    )  # block i is MoE when i % moe_every == moe_offset; None = moe_every - 1 (HF Switch: 1)
    router: RouterName = "switch"  # encoder router (and decoder router unless decoder_router is set)
    decoder_router: RouterName | None = None  # decoder router; None = same as router (FLAN-EC: gshard)
    top_k: int | None = Field(None, ge=1)  # k of the "top_k" router (switch/gshard/st_moe fix k=1/2/2)
    capacity_factor_train: float = Field(
        1.25, gt=0
    )  # token-choice capacity factor in training (Switch, ST-MoE: 1.25)
    capacity_factor_eval: float = Field(2.0, gt=0)  # token-choice capacity factor in eval (ST-MoE: 2.0)
    expert_choice_capacity: float = Field(
        2.0, gt=0
    )  # expert-choice c = this x tokens / experts (paper EC: 2)
    expert_capacity: int | None = Field(
        None, ge=1
    )  # fixed slots per expert in each sequence, replacing the capacity factors (HF Switch expert_capacity: 64)
    min_capacity: int = Field(4, ge=0)  # lower bound on slots per expert (ST-MoE min_expert_capacity: 4)
    dropless: bool = False  # route every token (no capacity, nothing dropped); token-choice only
    normalize_gates: bool = True  # k>1: rescale the k gates of a token to sum to 1 (GShard, ST-MoE)
    router_jitter: float = Field(
        0.0, ge=0, lt=1
    )  # multiplicative uniform noise on router input in training (Switch: 0.01)
    router_fp32: bool = True  # compute router logits/softmax in float32 (Switch "selective precision")
    load_balance_coef: float = Field(0.01, ge=0)  # Switch load-balancing loss weight (Switch, ST-MoE: 0.01)
    z_loss_coef: float | None = Field(
        None, ge=0
    )  # router z-loss weight; None = 1e-3 if st_moe is used, else 0
    expert_dropout: float = Field(
        0.0, ge=0, lt=1
    )  # dropout on the experts' hidden units (Switch fine-tuning: 0.4)

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.moe_offset is not None and self.moe_offset >= self.moe_every:
            raise ValueError(f"moe_offset: {self.moe_offset} must be < moe_every {self.moe_every}")
        if self.decoder_router == "expert_choice" or (
            self.decoder_router is None and self.router == "expert_choice"
        ):
            raise ValueError(
                "decoder_router: expert_choice sees future tokens of the group, so it is encoder-only; "
                "set decoder_router to a token-choice router (the paper's FLAN-EC uses gshard)"
            )
        uses_top_k = "top_k" in (self.router, self.decoder_router)
        if uses_top_k and self.top_k is None:
            raise ValueError("top_k: router 'top_k' needs top_k set")
        if self.top_k is not None and not uses_top_k:
            raise ValueError("top_k: only used by router 'top_k' (switch/gshard/st_moe fix their own k)")
        if self.top_k is not None and self.top_k > self.num_experts:
            raise ValueError(f"top_k: {self.top_k} > num_experts {self.num_experts}")
        for name in (self.router, self.decoder_router):
            if name in ("gshard", "st_moe") and self.num_experts < 2:
                raise ValueError(f"num_experts: router {name} picks 2 experts; needs num_experts >= 2")
        return self

    def is_moe_block(self, i: int) -> bool:
        """Whether block ``i`` (0-based, in either stack) has an MoE FFN."""
        offset = self.moe_every - 1 if self.moe_offset is None else self.moe_offset
        return i % self.moe_every == offset

    def router_for(self, stack: Literal["encoder", "decoder"]) -> RouterName:
        """The router name used by the MoE layers of ``stack``."""
        if stack == "decoder" and self.decoder_router is not None:
            return self.decoder_router
        return self.router

    def k_for(self, router: RouterName) -> int | None:
        """Experts per token of a token-choice router (``None`` for expert_choice)."""
        if router == "expert_choice":
            return None
        return self.top_k if router == "top_k" else ROUTER_TOP_K[router]

    @property
    def resolved_z_loss_coef(self) -> float:
        """z-loss weight after applying the st_moe default (1e-3, ST-MoE paper)."""
        if self.z_loss_coef is not None:
            return self.z_loss_coef
        return 1e-3 if "st_moe" in (self.router, self.decoder_router) else 0.0


class ModelConfig(StrictModel):
    """T5.1.1-style encoder-decoder; ``moe: null`` is the dense model."""

    preset: Literal["tiny", "mini", "small", "base"] | None = (
        "tiny"  # named shape; explicit fields override it
    )
    vocab_size: int | None = Field(None, gt=0)  # None = taken from the tokenizer at build time (T5: 32128)
    d_model: int = Field(None, gt=0)  # hidden width (T5.1.1-base: 768)
    d_ff: int = Field(None, gt=0)  # FFN / expert hidden width (T5.1.1-base: 2048)
    num_heads: int = Field(None, gt=0)  # attention heads (T5.1.1-base: 12)
    d_kv: int = Field(None, gt=0)  # width of one head (T5.1.1-base: 64)
    num_encoder_layers: int = Field(None, gt=0)  # encoder blocks (T5.1.1-base: 12)
    num_decoder_layers: int = Field(None, gt=0)  # decoder blocks (T5.1.1-base: 12)
    relative_attention_num_buckets: int = Field(32, gt=0)  # relative position buckets (T5: 32)
    relative_attention_max_distance: int = Field(128, gt=0)  # distance of the last log bucket (T5: 128)
    dropout_rate: float = Field(
        0.0, ge=0, lt=1
    )  # dropout on residual branches/attention (T5.1.1 pretrain: 0; FT: 0.1)
    layer_norm_eps: float = Field(1e-6, gt=0)  # RMSNorm epsilon (T5: 1e-6)
    ffn: FFNActivation = "gated_gelu"  # FFN and experts: T5.1.1 gated GELU, or relu (Switch, HF layout)
    tie_embeddings: bool = False  # share input embedding and LM head (T5.1.1: untied)
    init_std: float = Field(1.0, gt=0)  # T5 init factor (weights ~ N(0, factor / sqrt(fan_in)))
    moe: MoEConfig | None = None  # MoE layers; None = dense

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "tiny")
        if preset is None:
            return data
        if preset not in PRESETS:  # let the Literal report it
            return data
        return {
            **PRESETS[preset],
            **{k: v for k, v in data.items() if v is not None or k not in SHAPE_FIELDS},
        }

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for name in SHAPE_FIELDS:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required when preset is null")
        return self

    @property
    def is_moe(self) -> bool:
        return self.moe is not None


def arch_presets() -> dict[str, dict[str, Any] | None]:
    """The ``moe`` section of each arch of the paper's comparison (``None`` = dense).

    Shapes, ``num_experts`` and ``moe_every`` stay whatever params.yaml says, so every arch shares one
    backbone; FLOPs-matched dense twins come from ``flops.dense_twin``.
    """
    return {
        "dense": None,
        "switch": dict(router="switch"),  # Switch Transformer: top-1
        "gshard": dict(router="gshard"),  # GShard: top-2, second expert weighted by its gate
        "expert_choice": dict(router="expert_choice", decoder_router="gshard"),  # FLAN-EC
        "st_moe": dict(
            router="st_moe", z_loss_coef=1e-3, capacity_factor_train=1.25, capacity_factor_eval=2.0
        ),
    }


def model_config_for_arch(arch: str, **overrides: Any) -> ModelConfig:
    """A ``ModelConfig`` for ``arch`` (a key of ``arch_presets()``); ``overrides`` are ModelConfig fields,
    ``overrides["moe"]`` (a dict) is merged over the arch's MoE settings."""
    presets = arch_presets()
    if arch not in presets:
        raise ValueError(f"arch: unknown arch {arch!r}; one of {sorted(presets)}")
    moe = presets[arch]
    extra_moe = overrides.pop("moe", None) or {}
    if moe is not None:
        moe = {**moe, **extra_moe}
    return ModelConfig(**overrides, moe=moe)
