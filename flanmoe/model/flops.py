"""Parameter and FLOPs accounting for any ``ModelConfig``, and FLOPs-matched dense twins.

Counting rules (matmuls only, 1 multiply-add = 2 FLOPs; norms, softmax, GELU, embedding lookups
ignored):

- per token of a stack: attention projections, attention scores (``QK^T`` and ``AV`` over all keys;
  the causal mask is not discounted, as SDPA computes the full matrix), FFN or MoE, router;
- an MoE layer costs ``k_eff`` experts per token: ``k`` for token-choice, the capacity ``c`` factor
  for expert-choice (each expert takes ``c * T / E`` tokens, so ``c`` expert FFNs per token on
  average). Capacity padding and dropped tokens are not counted (these are *active* FLOPs);
- the LM head costs ``2 * d_model * vocab`` per decoder token;
- per token = forward FLOPs of one (input, target) pair / (enc_len + dec_len); training = 3x forward.

Dense twin (``dense_twin``): the same backbone without experts, with one **uniform** FFN width
chosen so that its FFN FLOPs equal the MoE model's expert FFN FLOPs: ``d_ff * (1 + (k_eff - 1) *
n_moe / n_layers)``. Top-1 keeps ``d_ff``; top-2 or EC with capacity 2 and ``moe_every=2`` gives
``1.5 * d_ff``. Only the router's ``2 * d_model * E`` FLOPs per MoE layer stay unmatched (reported
separately as ``router``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flanmoe.model.config import ModelConfig


@dataclass
class Accounting:
    """Sizes and costs of one config at given sequence lengths."""

    params: int  # all parameters
    active_params: int  # parameters touched by one token (k_eff experts per MoE layer)
    forward_flops_per_token: float
    train_flops_per_token: float  # 3x forward (backward = 2x forward)
    breakdown: dict[str, float]  # forward FLOPs per token by part: attention, ffn, router, lm_head


def _moe_positions(cfg: ModelConfig, n_layers: int) -> list[bool]:
    if cfg.moe is None:
        return [False] * n_layers
    return [cfg.moe.is_moe_block(i) for i in range(n_layers)]


def experts_per_token(cfg: ModelConfig, stack: str) -> float:
    """``k_eff`` of the MoE layers of ``stack`` ("encoder"/"decoder"); 1.0 for a dense model."""
    if cfg.moe is None:
        return 1.0
    router = cfg.moe.router_for(stack)  # type: ignore[arg-type]
    k = cfg.moe.k_for(router)
    return cfg.moe.expert_choice_capacity if k is None else float(k)


def ffn_matrices(cfg: ModelConfig) -> int:
    """Weight matrices of one FFN or expert: 3 for gated GELU (wi_0, wi_1, wo), 2 for ReLU (wi, wo)."""
    return 3 if cfg.ffn == "gated_gelu" else 2


def _ffn_params(cfg: ModelConfig) -> int:
    return ffn_matrices(cfg) * cfg.d_model * cfg.d_ff


def _stack_params(cfg: ModelConfig, decoder: bool, active: bool) -> float:
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    n = cfg.num_decoder_layers if decoder else cfg.num_encoder_layers
    attn = (8 if decoder else 4) * d * inner
    norms = (3 if decoder else 2) * d
    total: float = cfg.relative_attention_num_buckets * cfg.num_heads + d  # shared bias + final norm
    k_eff = experts_per_token(cfg, "decoder" if decoder else "encoder")
    for is_moe in _moe_positions(cfg, n):
        total += attn + norms
        if is_moe:
            assert cfg.moe is not None
            experts = k_eff if active else cfg.moe.num_experts
            total += experts * _ffn_params(cfg) + d * cfg.moe.num_experts
        else:
            total += _ffn_params(cfg)
    return total


def param_count(cfg: ModelConfig, vocab_size: int | None = None) -> int:
    """All parameters of ``build_model(cfg, vocab_size)``."""
    vocab = _vocab(cfg, vocab_size)
    emb = vocab * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return int(emb + _stack_params(cfg, False, False) + _stack_params(cfg, True, False))


def active_param_count(cfg: ModelConfig, vocab_size: int | None = None) -> float:
    """Parameters one token uses: all non-expert ones plus ``k_eff`` experts per MoE layer
    (fractional for expert-choice with a fractional capacity)."""
    vocab = _vocab(cfg, vocab_size)
    emb = vocab * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return emb + _stack_params(cfg, False, True) + _stack_params(cfg, True, True)


def forward_flops(cfg: ModelConfig, vocab_size: int | None, enc_len: int, dec_len: int) -> dict[str, float]:
    """Forward FLOPs of one example (``enc_len`` input, ``dec_len`` target tokens), by part."""
    vocab = _vocab(cfg, vocab_size)
    d, inner, f, m = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff, ffn_matrices(cfg)
    parts = {"attention": 0.0, "ffn": 0.0, "router": 0.0, "lm_head": 2.0 * d * vocab * dec_len}
    for decoder, n, toks in (
        (False, cfg.num_encoder_layers, enc_len),
        (True, cfg.num_decoder_layers, dec_len),
    ):
        k_eff = experts_per_token(cfg, "decoder" if decoder else "encoder")
        for is_moe in _moe_positions(cfg, n):
            parts["attention"] += toks * (2 * 4 * d * inner + 2 * 2 * toks * inner)  # projections + scores
            if decoder:  # cross-attention: q/o on targets, k/v on inputs, scores over inputs
                parts["attention"] += toks * 2 * 2 * d * inner + enc_len * 2 * 2 * d * inner
                parts["attention"] += toks * 2 * 2 * enc_len * inner
            if is_moe:
                assert cfg.moe is not None
                parts["ffn"] += toks * k_eff * 2 * m * d * f
                parts["router"] += toks * 2 * d * cfg.moe.num_experts
            else:
                parts["ffn"] += toks * 2 * m * d * f
    return parts


def accounting(
    cfg: ModelConfig, vocab_size: int | None = None, enc_len: int = 512, dec_len: int = 128
) -> Accounting:
    """Params, active params and FLOPs per token (forward and training) of ``cfg``."""
    parts = forward_flops(cfg, vocab_size, enc_len, dec_len)
    per_tok = {k: v / (enc_len + dec_len) for k, v in parts.items()}
    fwd = sum(per_tok.values())
    return Accounting(
        params=param_count(cfg, vocab_size),
        active_params=int(round(active_param_count(cfg, vocab_size))),
        forward_flops_per_token=fwd,
        train_flops_per_token=3 * fwd,
        breakdown=per_tok,
    )


def dense_twin(cfg: ModelConfig) -> ModelConfig:
    """The dense model with the same FFN FLOPs per token as ``cfg`` (see module docstring).

    Raises ``ValueError`` when no single integer ``d_ff`` matches both stacks exactly (e.g. encoder
    and decoder routers with different k); a dense config is its own twin.
    """
    if cfg.moe is None:
        return cfg.model_copy()
    widths = set()
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        n_moe = sum(_moe_positions(cfg, n))
        widths.add(cfg.d_ff * (1 + (experts_per_token(cfg, stack) - 1) * n_moe / n))
    if len(widths) != 1 or not float(next(iter(widths))).is_integer():
        raise ValueError(
            f"d_ff: no uniform dense FFN width matches this MoE config's FLOPs exactly (needs {sorted(widths)})"
        )
    return ModelConfig.model_validate({**cfg.model_dump(), "moe": None, "d_ff": int(next(iter(widths)))})


def _vocab(cfg: ModelConfig, vocab_size: int | None) -> int:
    vocab = vocab_size if vocab_size is not None else cfg.vocab_size
    if vocab is None:
        raise ValueError("vocab_size: not set in the config and not given")
    return vocab
