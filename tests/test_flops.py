"""Accounting: parameter counts, active parameters, FLOPs per token, dense twins."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from flanmoe.model.config import ModelConfig
from flanmoe.model.flops import accounting, active_param_count, dense_twin, forward_flops, param_count
from flanmoe.model.transformer import build_model

V = 97
SMALL = dict(d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)
CONFIGS = {
    "dense": ModelConfig(**SMALL),
    "switch": ModelConfig(**SMALL, moe={"num_experts": 4}),
    "gshard": ModelConfig(**SMALL, moe={"num_experts": 4, "router": "gshard"}),
    "ec": ModelConfig(**SMALL, moe={"num_experts": 4, "router": "expert_choice", "decoder_router": "gshard"}),
    "tied_every1": ModelConfig(**SMALL, tie_embeddings=True, moe={"num_experts": 3, "moe_every": 1}),
    "relu_switch": ModelConfig(**SMALL, ffn="relu", moe={"num_experts": 4}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_param_count_matches_module(name: str) -> None:
    cfg = CONFIGS[name]
    model = build_model(cfg, V)
    assert param_count(cfg, V) == sum(p.numel() for p in model.parameters())


def test_base_param_count_analytic() -> None:
    assert param_count(ModelConfig(preset="base"), 32128) == 247_577_856  # google/t5-v1_1-base


@pytest.mark.parametrize("name", ["dense", "tied_every1", "relu_switch"])
def test_forward_flops_match_torch_flop_counter(name: str) -> None:
    cfg = CONFIGS[name].model_copy(update={"moe": None})  # dense: every matmul is real work
    model = build_model(cfg, V)
    x, y = torch.randint(3, V, (1, 9)), torch.randint(3, V, (1, 5))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # MATH: counted as bmm
        model(x, labels=y)
    assert counter.get_total_flops() == sum(forward_flops(cfg, V, 9, 5).values())


def test_moe_flops_hand_computed() -> None:
    # One encoder layer, MoE top-2 over 4 experts, d=4, f=8: per token 2 experts * 3 matmuls * 2*d*f.
    cfg = ModelConfig(
        d_model=4, d_ff=8, num_heads=1, d_kv=4, num_encoder_layers=1, num_decoder_layers=1,
        moe={"num_experts": 4, "router": "gshard", "moe_every": 1},
    )  # fmt: skip
    parts = forward_flops(cfg, 10, enc_len=3, dec_len=2)
    assert parts["ffn"] == (3 + 2) * 2 * 3 * 2 * 4 * 8
    assert parts["router"] == (3 + 2) * 2 * 4 * 4
    assert parts["lm_head"] == 2 * 2 * 4 * 10
    enc_attn = 3 * 2 * 4 * 4 * 4 + 3 * 3 * 2 * 2 * 4  # q,k,v,o + QK^T and AV over 3 keys
    dec_attn = 2 * 2 * 4 * 4 * 4 + 2 * 2 * 2 * 2 * 4  # self
    dec_attn += 2 * 2 * 2 * 4 * 4 + 3 * 2 * 2 * 4 * 4 + 2 * 3 * 2 * 2 * 4  # cross: q,o; k,v on inputs; scores
    assert parts["attention"] == enc_attn + dec_attn


def test_switch_flops_equal_dense_twin() -> None:
    moe = CONFIGS["switch"]
    twin = dense_twin(moe)
    assert twin.moe is None and twin.d_ff == moe.d_ff  # top-1: same width
    a, b = accounting(moe, V), accounting(twin, V)
    assert a.forward_flops_per_token - a.breakdown["router"] == pytest.approx(
        b.forward_flops_per_token, rel=1e-12
    )
    assert a.breakdown["router"] < 0.01 * a.forward_flops_per_token  # the only unmatched part is small
    assert a.train_flops_per_token == 3 * a.forward_flops_per_token
    # Active params of top-1 = the twin's params + the routers' weights; total params much larger.
    routers = 2 * 32 * 4
    assert active_param_count(moe, V) == param_count(twin, V) + routers
    assert (
        param_count(moe, V) == param_count(twin, V) + 2 * 3 * (3 * 32 * 48) + routers
    )  # 3 more experts x 2 layers


@pytest.mark.parametrize("name", ["gshard", "ec"])
def test_top2_and_ec_twin_widens_ffn(name: str) -> None:
    moe = CONFIGS[name]
    twin = dense_twin(moe)
    assert twin.d_ff == 72  # 48 * (1 + (2 - 1) * 1/2): one of two layers per stack is MoE with 2 experts
    a, b = accounting(moe, V), accounting(twin, V)
    assert a.breakdown["ffn"] == pytest.approx(b.breakdown["ffn"], rel=1e-12)
    assert a.breakdown["attention"] == b.breakdown["attention"]


def test_dense_twin_refuses_unmatched_stacks() -> None:
    cfg = ModelConfig(**SMALL, moe={"num_experts": 4, "router": "expert_choice", "decoder_router": "switch"})
    with pytest.raises(ValueError, match="d_ff"):
        dense_twin(cfg)


def test_relu_ffn_counts_two_matrices() -> None:
    gated, relu = CONFIGS["switch"], CONFIGS["relu_switch"]
    a, b = forward_flops(gated, V, 9, 5), forward_flops(relu, V, 9, 5)
    assert b["ffn"] * 3 == a["ffn"] * 2
    assert {k: v for k, v in a.items() if k != "ffn"} == {k: v for k, v in b.items() if k != "ffn"}
    assert param_count(gated, V) - param_count(relu, V) == (2 + 2 * 4) * 32 * 48  # 2 dense FFNs, 8 experts
