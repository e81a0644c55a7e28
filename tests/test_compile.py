"""torch.compile trains every arch: 3 AdamW steps compiled match eager from the same init.

The MoE layers run eagerly inside the compiled model (one graph break each: data-dependent routing
and ``_grouped_mm``, which has no float32 meta kernel on CPU). Every arch goes through dynamo and
AOTAutograd (``aot_eager``, 5-9 s each; FLAN-EC only outside ``slow``); inductor's C++ code generation, the slow part
(about 40-50 s per arch on 2 cores without a warm cache), runs for dense and FLAN-EC (both routers).
"""

from __future__ import annotations

import copy

import pytest
import torch

from flanmoe.model.config import arch_presets, model_config_for_arch
from flanmoe.model.transformer import FlanMoEModel, build_model

V = 64
MICRO = dict(d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # no graphs or recompile counts carried over from another arch
    yield
    torch._dynamo.reset()


def _model(arch: str) -> FlanMoEModel:
    torch.manual_seed(0)
    moe = None if arch == "dense" else {"num_experts": 4}
    return build_model(model_config_for_arch(arch, **MICRO, moe=moe), V).train()


def _batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randint(2, V, (2, 8), generator=g)
        x[0, 6:] = 0  # encoder padding
        y = torch.randint(2, V, (2, 4), generator=g)
        y[1, 3:] = -100  # decoder padding
        out.append((x, y))
    return out


def _train(model: FlanMoEModel, backend: str | None) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fwd = model if backend is None else torch.compile(model, backend=backend, dynamic=False)
    losses = []
    for x, y in _batches():
        loss = fwd(x, x != 0, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _check(arch: str, backend: str) -> None:
    eager = _model(arch)
    compiled = copy.deepcopy(eager)
    ref = _train(eager, None)
    got = _train(compiled, backend)
    assert got == pytest.approx(ref, abs=1e-4)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize(  # FLAN-EC (both router kinds) stays in the fast suite; ~6-9 s per arch
    "arch",
    [pytest.param(a, marks=[] if a == "expert_choice" else [pytest.mark.slow]) for a in arch_presets()],
)
def test_compiled_training_matches_eager(arch: str) -> None:
    _check(arch, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["dense", "expert_choice"])
def test_inductor_training_matches_eager(arch: str) -> None:
    _check(arch, "inductor")
