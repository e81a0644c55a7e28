"""MoE layer: routers, capacity, dispatch/experts, aux losses, params errors, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from flanmoe.model.config import ModelConfig, MoEConfig
from flanmoe.model.experts import GroupedExperts
from flanmoe.model.moe import MoELayer
from flanmoe.model.router import ExpertChoiceRouter, TokenChoiceTopKRouter
from flanmoe.params_base import format_validation_error

D, F, E = 8, 12, 4


def make_layer(
    router: str = "switch", dtype=torch.float64, seed: int = 0, ffn="gated_gelu", **moe
) -> MoELayer:
    torch.manual_seed(seed)
    cfg = MoEConfig(num_experts=moe.pop("num_experts", E), router=router, **moe)
    backend = moe.pop("backend", "bmm")
    return MoELayer.from_config(cfg, router, D, F, backend=backend, ffn=ffn).to(dtype)


def naive_token_choice(layer: MoELayer, x: torch.Tensor, k: int, normalize: bool) -> torch.Tensor:
    """Token by token, expert by expert, no capacity: sum_j gate_j * FFN_{e_j}(x_t)."""
    ex, w = layer.experts, layer.router.gate.weight.detach()
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        probs = torch.softmax(w @ x[t], dim=0)
        chosen = sorted(range(len(probs)), key=lambda e: -float(probs[e].detach()))[:k]
        total = sum(float(probs[e]) for e in chosen) if normalize and k > 1 else 1.0
        for e in chosen:
            if ex.activation == "gated_gelu":
                h = torch.nn.functional.gelu(x[t] @ ex.wi_0[e], approximate="tanh") * (x[t] @ ex.wi_1[e])
            else:
                h = torch.relu(x[t] @ ex.wi[e])
            out[t] += probs[e] / total * (h @ ex.wo[e])
    return out


@pytest.mark.parametrize(
    "router,k,ffn", [("switch", 1, "gated_gelu"), ("gshard", 2, "gated_gelu"), ("top_k", 3, "gated_gelu"),
                     ("switch", 1, "relu"), ("gshard", 2, "relu")]
)  # fmt: skip
def test_dropless_equals_naive_reference(router: str, k: int, ffn: str) -> None:
    extra = {"top_k": 3} if router == "top_k" else {}
    layer = make_layer(router, dropless=True, ffn=ffn, **extra)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    y, aux = layer(x)
    ref = naive_token_choice(layer, x.reshape(-1, D), k, normalize=True)
    torch.testing.assert_close(y.reshape(-1, D), ref)
    assert aux.stats.dropped_tokens.item() == 0 and aux.stats.tokens_per_expert.sum().item() == 18 * k


@pytest.mark.parametrize("ffn", ["gated_gelu", "relu"])
def test_grouped_mm_backend_matches_bmm(ffn: str) -> None:
    torch.manual_seed(1)
    gm = GroupedExperts(E, D, F, backend="grouped_mm", activation=ffn)
    bm = GroupedExperts(E, D, F, backend="bmm", activation=ffn)
    bm.load_state_dict(gm.state_dict())
    counts = torch.tensor([3, 0, 5, 2])  # an empty expert too
    x = torch.randn(10, D, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = gm(x, counts), bm(x2, counts)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(bm(x2, counts, capacity=7), y2)  # a static bound (no host sync) pads more
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)
    names = [n for n, _ in gm.named_parameters()]
    assert names == (["wi_0", "wi_1", "wo"] if ffn == "gated_gelu" else ["wi", "wo"])
    for name in names:
        torch.testing.assert_close(getattr(gm, name).grad, getattr(bm, name).grad)


def test_grouped_mm_runs_in_the_autocast_dtype() -> None:
    """Autocast casts bmm but not ``_grouped_mm``: the experts cast for it, so a bf16 run computes
    them in bf16 (as the bmm path does), gradients reach the float32 weights."""
    torch.manual_seed(2)
    gm = GroupedExperts(4, 16, 24, backend="grouped_mm")
    bm = GroupedExperts(4, 16, 24, backend="bmm")
    bm.load_state_dict(gm.state_dict())
    counts = torch.tensor([3, 0, 5, 2])
    x = torch.randn(10, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = gm(x, counts), bm(x, counts)
    assert y1.dtype == y2.dtype == torch.bfloat16
    torch.testing.assert_close(y1, y2, atol=2e-2, rtol=2e-2)
    y1.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in gm.parameters())
    assert gm(x, counts).dtype == torch.float32  # no autocast: float32 as before


@pytest.mark.parametrize("k,normalize", [(1, True), (2, True), (2, False)])
def test_top_k_invariants(k: int, normalize: bool) -> None:
    torch.manual_seed(2)
    r = TokenChoiceTopKRouter(D, E, k=k, dropless=True, normalize_gates=normalize).double()
    x = torch.randn(30, D, dtype=torch.float64)
    routing = r(x)
    pairs = list(zip(routing.token_idx.tolist(), routing.expert_idx.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # no token sent twice to one expert
    per_token = torch.bincount(routing.token_idx, minlength=30)
    assert (per_token == k).all()
    gate_sum = torch.zeros(30, dtype=torch.float64).index_add(0, routing.token_idx, routing.gates)
    probs = torch.softmax(x @ r.gate.weight.t(), -1)
    expected = torch.ones(30, dtype=torch.float64) if (normalize or k == 1) else probs.topk(k).values.sum(-1)
    if k == 1:  # Switch: the gate is the top-1 probability itself
        expected = probs.max(-1).values
    torch.testing.assert_close(gate_sum, expected)
    assert (routing.expert_idx[1:] >= routing.expert_idx[:-1]).all()  # sorted by expert for dispatch


@pytest.mark.parametrize("k,cf", [(1, 1.0), (2, 0.5), (2, 1.0)])
def test_capacity_respected_and_drops_counted(k: int, cf: float) -> None:
    torch.manual_seed(3)
    T = 40
    r = TokenChoiceTopKRouter(D, E, k=k, capacity_factor=(cf, 9.0), min_capacity=0).double()
    r.gate.weight.data[0] += 0.7  # make expert 0 popular so capacity binds
    x = torch.randn(T, D, dtype=torch.float64).abs()
    routing = r(x)
    cap = math.ceil(cf * T * k / E)
    assert (routing.tokens_per_expert <= cap).all()
    # Naive: first choices of all tokens in token order, then second choices (GShard priority).
    top = torch.softmax(x @ r.gate.weight.t(), -1).topk(k).indices
    used, kept = [0] * E, set()
    for rank in range(k):
        for t in range(T):
            e = int(top[t, rank])
            if used[e] < cap:
                used[e] += 1
                kept.add((t, e))
    got = set(zip(routing.token_idx.tolist(), routing.expert_idx.tolist(), strict=True))
    assert got == kept
    routed = {t for t, _ in kept}
    assert routing.stats.dropped_tokens.item() == T - len(routed) > 0
    assert routing.stats.dropped_assignments.item() == T * k - len(kept)
    r.eval()  # eval capacity factor 9.0: nothing dropped
    assert r(x).stats.dropped_assignments.item() == 0


def test_fixed_capacity_replaces_factors() -> None:
    # HF Switch expert_capacity: the same slots per expert in training and eval, whatever the group size.
    r = TokenChoiceTopKRouter(D, E, k=1, capacity_factor=(9.0, 9.0), fixed_capacity=3).double()
    assert r.capacity(40) == 3 and r.eval().capacity(1000) == 3
    r.gate.weight.data[0] += 5.0
    routing = r(torch.randn(40, D, dtype=torch.float64).abs())
    assert (routing.tokens_per_expert <= 3).all() and routing.stats.dropped_tokens.item() > 0
    assert TokenChoiceTopKRouter(D, E, k=1, fixed_capacity=3, dropless=True).capacity(40) is None


@pytest.mark.parametrize("k", [1, 2])
def test_fixed_capacity_counts_per_sequence(k: int) -> None:
    # HF Switch: each sequence has expert_capacity slots per expert, its earlier tokens first.
    torch.manual_seed(4)
    B, S, cap = 3, 10, 2
    r = TokenChoiceTopKRouter(D, E, k=k, fixed_capacity=cap).double()
    x = torch.randn(B * S, D, dtype=torch.float64)
    mask = torch.ones(B * S, dtype=torch.bool)
    mask[25:] = False  # padding at the end of the last sequence
    routing = r(x, mask, seq_len=S)
    top = torch.softmax(x @ r.gate.weight.t(), -1).topk(k).indices
    kept = set()
    for b in range(B):
        used = [0] * E
        for rank in range(k):  # first choices before second choices, within the sequence
            for t in range(b * S, (b + 1) * S):
                e = int(top[t, rank])
                if mask[t] and used[e] < cap:
                    used[e] += 1
                    kept.add((t, e))
    got = list(zip(routing.token_idx.tolist(), routing.expert_idx.tolist(), strict=True))
    assert set(got) == kept and len(got) == len(kept)
    assert (routing.expert_idx[1:] >= routing.expert_idx[:-1]).all()  # sorted by expert for dispatch
    assert routing.tokens_per_expert.tolist() == [sum(e == i for _, e in kept) for i in range(E)]
    assert routing.stats.dropped_assignments.item() == 25 * k - len(kept) > 0


def test_dropped_tokens_pass_as_zero_update() -> None:
    layer = make_layer("switch", capacity_factor_train=0.25, min_capacity=0)
    layer.router.gate.weight.data[0] += 5.0
    x = torch.randn(24, D, dtype=torch.float64).abs()
    y, aux = layer(x)
    routed = torch.zeros(24, dtype=torch.bool)
    routed[layer.router(x).token_idx] = True
    assert aux.stats.dropped_tokens.item() == int((~routed).sum()) > 0
    assert (y[~routed] == 0).all() and (y[routed].abs().sum(-1) > 0).all()


def test_padding_is_not_routed() -> None:
    r = TokenChoiceTopKRouter(D, E, k=2, dropless=True).double()
    x = torch.randn(10, D, dtype=torch.float64)
    mask = torch.tensor([True] * 7 + [False] * 3)
    routing = r(x, mask)
    assert routing.token_idx.max() < 7 and routing.stats.num_tokens.item() == 7
    assert int(routing.tokens_per_expert.sum()) == 14
    ec = ExpertChoiceRouter(D, E, capacity=2.0).double()
    assert ec(x, mask).token_idx.max() < 7
    few = torch.tensor([True] * 3 + [False] * 7)  # fewer real tokens than c = 5: padding picks get gate 0
    routing = ec(x, few)
    assert routing.token_idx.numel() == E * 5 and (routing.gates[routing.token_idx >= 3] == 0).all()
    assert routing.stats.tokens_per_expert.tolist() == [3] * E


def test_expert_choice_each_expert_takes_top_c() -> None:
    torch.manual_seed(4)
    T = 20
    r = ExpertChoiceRouter(D, E, capacity=2.0).double()
    x = torch.randn(T, D, dtype=torch.float64)
    routing = r(x)
    c = math.ceil(2.0 * T / E)
    assert (routing.tokens_per_expert == c).all()
    assert (torch.bincount(routing.expert_idx, minlength=E) == c).all()
    probs = torch.softmax(x @ r.gate.weight.t(), -1)
    for e in range(E):
        mine = set(routing.token_idx[routing.expert_idx == e].tolist())
        assert mine == set(probs[:, e].topk(c).indices.tolist())
    chosen = set(routing.token_idx.tolist())
    assert routing.stats.dropped_tokens.item() == T - len(chosen)


def test_load_balance_and_z_loss_hand_computed() -> None:
    ln3, ln7 = math.log(3), math.log(7)
    r = TokenChoiceTopKRouter(2, 2, k=1, dropless=True).double()
    r.gate.weight.data = torch.eye(2, dtype=torch.float64)  # logits = x
    x = torch.tensor([[0, ln3], [ln3, 0], [0, ln3], [0, ln7]], dtype=torch.float64)
    routing = r(x)
    # f = [1/4, 3/4]; P = [(1/4+3/4+1/4+1/8)/4, (3/4+1/4+3/4+7/8)/4]; loss = E * sum f*P
    assert routing.load_balance_loss.item() == pytest.approx(2 * (0.25 * 1.375 / 4 + 0.75 * 2.625 / 4))
    # logsumexp rows: ln4, ln4, ln4, ln8 -> mean of squares = 21/4 ln(2)^2
    assert routing.z_loss.item() == pytest.approx(21 / 4 * math.log(2) ** 2)


def test_aux_loss_weighting() -> None:
    layer = make_layer("st_moe", load_balance_coef=0.5)
    assert layer.z_loss_coef == 1e-3  # the st_moe default
    _, aux = layer(torch.randn(12, D, dtype=torch.float64))
    torch.testing.assert_close(aux.loss, 0.5 * aux.load_balance_loss + 1e-3 * aux.z_loss)


def test_expert_choice_in_decoder_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        ModelConfig(moe={"router": "expert_choice"})
    lines = format_validation_error(err.value, prefix="model")
    assert lines[0].startswith("model.moe.decoder_router: expert_choice")
    with pytest.raises(ValidationError, match="decoder_router"):
        MoEConfig(router="switch", decoder_router="expert_choice")
    cfg = MoEConfig(router="expert_choice", decoder_router="gshard")  # FLAN-EC is expressible
    assert cfg.router_for("encoder") == "expert_choice" and cfg.router_for("decoder") == "gshard"


def test_top_k_router_needs_k() -> None:
    with pytest.raises(ValidationError, match="top_k"):
        MoEConfig(router="top_k")
    assert MoEConfig(router="top_k", top_k=3).k_for("top_k") == 3


def test_jitter_only_in_training() -> None:
    r = TokenChoiceTopKRouter(D, E, k=1, jitter=0.1).double()
    x = torch.randn(6, D, dtype=torch.float64)
    r.eval()
    torch.testing.assert_close(r.logits(x), r.logits(x))
    r.train()
    assert not torch.equal(r.logits(x), r.logits(x))


@pytest.mark.parametrize("router", ["gshard", "expert_choice"])
def test_gradcheck(router: str) -> None:
    extra = {"decoder_router": "gshard"} if router == "expert_choice" else {"dropless": True}
    layer = make_layer(router, num_experts=3, seed=5, **extra)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    x = torch.randn(6, D, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        y, aux = torch.func.functional_call(layer, dict(zip(names, ps, strict=True)), (x,))
        return y, aux.loss

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)
    y, aux_loss = f(x, *params)
    (y.square().sum() + aux_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)  # router and experts


def test_router_fp32_and_expert_dropout() -> None:
    torch.manual_seed(6)
    layer = MoELayer.from_config(MoEConfig(num_experts=E, dropless=True, expert_dropout=0.5), "switch", D, F)
    layer = layer.to(torch.bfloat16)
    x = torch.randn(16, D, dtype=torch.bfloat16)
    assert layer.router.logits(x).dtype == torch.float32  # selective precision
    layer.eval()
    y_eval, _ = layer(x)
    assert y_eval.dtype == torch.bfloat16 and torch.equal(y_eval, layer(x)[0])  # no dropout in eval
    layer.train()
    assert not torch.equal(layer(x)[0], y_eval)  # expert dropout active in training
