"""Router statistics: no host sync in the MoE forward/backward, and the log reduction's numbers."""

from __future__ import annotations

import math

import pytest
import torch

from flanmoe.model.config import ModelConfig
from flanmoe.model.router import RouterStats, RouterStatsAccumulator, reduce_router_stats
from flanmoe.model.transformer import build_model

V = 64
MICRO = dict(d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)
ROUTERS = {
    "switch": {"router": "switch"},
    "gshard": {"router": "gshard"},
    "expert_choice": {"router": "expert_choice", "decoder_router": "gshard"},
    "st_moe": {"router": "st_moe"},
}


def _no_sync(*_args, **_kwargs):
    raise AssertionError("host sync: a tensor was turned into a Python value in the forward path")


@pytest.fixture
def forbid_host_sync(monkeypatch: pytest.MonkeyPatch):
    """Within the ``with`` block, ``item``/``int``/``float``/``bool`` of any tensor raise."""

    class _Guard:
        def __enter__(self):
            for name in ("item", "__int__", "__float__", "__bool__", "__index__"):
                monkeypatch.setattr(torch.Tensor, name, _no_sync)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return _Guard()


def test_guard_catches_syncs(forbid_host_sync) -> None:
    t = torch.ones(())
    with forbid_host_sync:
        for sync in (int, float, bool, torch.Tensor.item, lambda v: [0, 1][v]):
            with pytest.raises(AssertionError, match="host sync"):
                sync(t.long())
        torch.ones(3)[t.long()]  # indexing by a tensor stays on the device
    assert int(t) == 1  # restored after the block


def _batch(B: int = 2, S: int = 8, T: int = 4):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, V, (B, S), generator=g)
    x[0, 5:] = 0  # encoder padding
    y = torch.randint(2, V, (B, T), generator=g)
    y[1, 2:] = -100  # decoder padding
    return x, y


@pytest.mark.parametrize("dropless", [False, True], ids=["capacity", "dropless"])
@pytest.mark.parametrize("arch", list(ROUTERS))
def test_moe_forward_backward_has_no_host_sync(arch: str, dropless: bool, forbid_host_sync) -> None:
    moe = {**ROUTERS[arch], "num_experts": 4, "dropless": dropless, "min_capacity": 1}
    moe["capacity_factor_train"] = 0.5  # tight: some tokens are dropped on the capacity path
    torch.manual_seed(0)
    model = build_model(ModelConfig(**MICRO, moe=moe), V).train()
    x, y = _batch()
    mask = x != 0
    with forbid_host_sync:
        out = model(x, mask, labels=y)
        out.loss.backward()
        acc = RouterStatsAccumulator()
        acc.add(out.router_stats)
        acc.add(out.router_stats)
    assert all(p.grad is not None for n, p in model.named_parameters() if "router" in n)
    enc, dec = out.router_stats["encoder.1"], out.router_stats["decoder.1"]
    assert all(isinstance(v, torch.Tensor) for v in vars(enc).values())
    assert enc.num_tokens.item() == int(mask.sum()) and dec.num_tokens.item() == 6
    assert enc.expert_fraction.sum().item() == pytest.approx(1.0)
    logs = acc.reduce()
    assert logs["encoder.1/dropped_fraction"] == pytest.approx(enc.dropped_fraction.item())
    if dropless and arch != "expert_choice":
        assert logs["moe/dropped_fraction"] == 0.0


def test_bmm_experts_with_capacity_have_no_host_sync(forbid_host_sync) -> None:
    # float64 takes the bmm experts; the router's static capacity bound sizes their buffer.
    torch.manual_seed(0)
    model = build_model(ModelConfig(**MICRO, moe={"num_experts": 4, "router": "gshard"}), V).double()
    x, y = _batch()
    with forbid_host_sync:
        model(x, x != 0, labels=y).loss.backward()


def test_capacity_comes_from_group_size_including_padding() -> None:
    from flanmoe.model.router import ExpertChoiceRouter, TokenChoiceTopKRouter

    x = torch.randn(12, 8)
    mask = torch.tensor([True] * 3 + [False] * 9)
    r = TokenChoiceTopKRouter(8, 4, k=1, capacity_factor=(1.0, 1.0), min_capacity=0)
    r.gate.weight.data.zero_()
    r.gate.weight.data[0, 0] = 100.0  # every token wants expert 0
    x[:, 0] = 1.0
    routing = r(x, mask)
    assert r.capacity(12) == 3 and routing.tokens_per_expert.tolist() == [3, 0, 0, 0]  # not ceil(3/4)=1
    assert routing.stats.dropped_tokens.item() == 0 and routing.stats.num_tokens.item() == 3
    ec = ExpertChoiceRouter(8, 4, capacity=2.0)
    routing = ec(x, mask)
    assert routing.token_idx.numel() == 4 * 6  # static: E * ceil(2 * 12 / 4)
    assert (routing.gates[routing.token_idx >= 3] == 0).all()  # padding picks carry no update
    assert routing.stats.tokens_per_expert.tolist() == [3, 3, 3, 3]  # stats count real tokens only
    assert routing.stats.dropped_tokens.item() == 0


def _stats(tpe: list[int], n: int, dropped: int, dropped_assign: int, entropy: float) -> RouterStats:
    t = torch.tensor(tpe)
    return RouterStats(
        tokens_per_expert=t,
        expert_fraction=t.float() / max(sum(tpe), 1),
        num_tokens=torch.tensor(n),
        dropped_tokens=torch.tensor(dropped),
        dropped_assignments=torch.tensor(dropped_assign),
        dropped_fraction=torch.tensor(dropped / max(n, 1)),
        entropy=torch.tensor(entropy),
    )


def test_reduce_hand_made() -> None:
    step1 = {"encoder.1": _stats([3, 1, 0, 0], 5, 1, 1, 1.0), "decoder.1": _stats([2, 2, 2, 2], 4, 0, 0, 0.5)}
    step2 = {"encoder.1": _stats([1, 1, 2, 0], 5, 2, 3, 0.0), "decoder.1": _stats([0, 0, 0, 0], 0, 0, 0, 0.0)}
    one = reduce_router_stats(step1)
    assert [one[f"encoder.1/expert_fraction/{e}"] for e in range(4)] == [0.75, 0.25, 0.0, 0.0]
    assert one["encoder.1/dropped_fraction"] == pytest.approx(0.2)
    assert one["encoder.1/load_max_over_mean"] == pytest.approx(3.0)  # 3 / (4 / 4)
    assert one["decoder.1/load_max_over_mean"] == pytest.approx(1.0)
    assert one["moe/dropped_fraction"] == pytest.approx(0.1)
    assert one["moe/entropy"] == pytest.approx(0.75)
    assert one["moe/load_max_over_mean"] == pytest.approx(2.0)

    both = reduce_router_stats([step1, step2])
    # encoder: counts [4, 2, 2, 0] over 8; 3 of 10 tokens dropped; entropy token-weighted (5*1 + 5*0)/10.
    assert [both[f"encoder.1/expert_fraction/{e}"] for e in range(4)] == [0.5, 0.25, 0.25, 0.0]
    assert both["encoder.1/dropped_fraction"] == pytest.approx(0.3)
    assert both["encoder.1/entropy"] == pytest.approx(0.5)
    assert both["encoder.1/load_max_over_mean"] == pytest.approx(2.0)
    assert both["decoder.1/entropy"] == pytest.approx(0.5)  # the empty forward adds nothing
    assert both["moe/dropped_fraction"] == pytest.approx(0.15)
    assert all(isinstance(v, float) and not math.isnan(v) for v in both.values())

    acc = RouterStatsAccumulator()
    assert acc.reduce() == {} and acc.count == 0
    acc.add(step1)
    acc.add(step2)
    assert acc.count == 2 and acc.reduce() == both
    assert acc.reduce(lambda t: t * 2) == pytest.approx(both)  # a SUM across 2 equal processes
    acc.reset()
    assert acc.count == 0 and acc.reduce() == {}
