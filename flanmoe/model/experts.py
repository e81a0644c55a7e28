"""Experts: E FFNs (gated GELU, or ReLU) as stacked weights, computed in one grouped operation.

Input is a buffer ``[N, d_model]`` sorted by expert plus ``tokens_per_expert`` ``[E]``
(contiguous segments, see ``dispatch.py``). Two interchangeable kernels, pure functions of the input
and the weights (``GroupedExperts`` holds the weights and picks one):

- ``grouped_mm_experts``: ``torch._grouped_mm`` segment matmul (no padding). Its CPU backward is not
  usable in torch 2.13, so ``_GroupedMM`` supplies one (two more grouped matmuls). float32/bf16/fp16
  only, and rows must be 16-byte aligned (d_model, d_ff multiples of 4 in float32).
- ``bmm_experts``: scatter rows into a zero-padded ``[E, C, d]`` buffer and use ``torch.bmm``; works for
  every dtype (float64 tests) at the cost of padding. ``C`` is the router's static bound on an
  expert's tokens when the caller passes one (``capacity``), else the busiest expert's count, which
  reads a tensor back to the host (a sync; dropless routing, or dispatchers that give no bound).

Under expert parallelism the weights are ``Shard(0)`` DTensors and the kernels get their local shards
(``local_shard``), as torchtitan's ``GroupedExperts`` does; their dtype is whatever FSDP's mixed
precision policy made them. The ``grouped_mm`` path never syncs with the host. Under
``torch.compile`` the expert computation runs eagerly (a graph break): ``_grouped_mm`` has no float32
meta kernel on CPU, and the custom backward below is only checked eagerly.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.config import FFNActivation
from flanmoe.model.init import init_experts_

ExpertsBackend = Literal["auto", "grouped_mm", "bmm"]


class _GroupedMM(torch.autograd.Function):
    """``y[rows of e] = x[rows of e] @ w[e]`` with the backward written in grouped matmuls."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, offs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w, offs)
        return torch._grouped_mm(x, w, offs=offs)

    @staticmethod
    def backward(ctx, dy: Tensor):  # type: ignore[override]
        x, w, offs = ctx.saved_tensors
        dy = dy.contiguous()
        dx = torch._grouped_mm(dy, w.transpose(-1, -2), offs=offs) if ctx.needs_input_grad[0] else None
        dw = torch._grouped_mm(x.t(), dy, offs=offs) if ctx.needs_input_grad[1] else None
        return dx, dw, None


def grouped_mm(x: Tensor, w: Tensor, offs: Tensor) -> Tensor:
    """Segment matmul: ``x`` ``[N, a]``, ``w`` ``[E, a, b]``, ``offs`` ``[E]`` int32 segment ends -> ``[N, b]``."""
    return _GroupedMM.apply(x, w, offs)


def _grouped_mm_ok(x: Tensor, *widths: int) -> bool:
    if not hasattr(torch, "_grouped_mm") or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    return all((w * x.element_size()) % 16 == 0 for w in widths)


def _hidden(h: tuple[Tensor, ...], activation: FFNActivation, dropout: float, training: bool) -> Tensor:
    """Hidden units from the input projections ``h`` (``(x wi_0, x wi_1)`` or ``(x wi,)``), expert dropout applied."""
    if activation == "gated_gelu":
        return F.dropout(F.gelu(h[0], approximate="tanh") * h[1], dropout, training)
    return F.dropout(F.relu(h[0]), dropout, training)


def grouped_mm_experts(
    x: Tensor,
    tokens_per_expert: Tensor,
    w_in: tuple[Tensor, ...],
    w_out: Tensor,
    activation: FFNActivation = "gated_gelu",
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """The experts ``w_in`` (``[E, d_model, d_ff]`` each), ``w_out`` ``[E, d_ff, d_model]`` on ``x``
    ``[N, d_model]`` sorted by expert (``tokens_per_expert`` ``[E]``) -> ``[N, d_model]``, with segment
    matmuls (no padding, no host sync)."""
    offs = torch.cumsum(tokens_per_expert, 0).to(torch.int32)
    h = _hidden(tuple(grouped_mm(x, w, offs) for w in w_in), activation, dropout, training)
    return grouped_mm(h, w_out, offs)


def bmm_experts(
    x: Tensor,
    tokens_per_expert: Tensor,
    w_in: tuple[Tensor, ...],
    w_out: Tensor,
    activation: FFNActivation = "gated_gelu",
    dropout: float = 0.0,
    training: bool = False,
    capacity: int | None = None,
) -> Tensor:
    """As ``grouped_mm_experts``, through a zero-padded ``[E, capacity, d_model]`` buffer and ``torch.bmm``
    (every dtype). ``capacity``: a static bound on ``tokens_per_expert``; without it the busiest
    expert's count is read back (a host sync)."""
    E, N = w_out.shape[0], x.shape[0]
    if capacity is None:  # host sync: the busiest expert's count sizes the buffer
        capacity = int(tokens_per_expert.max()) if N > 0 else 0
    experts = torch.arange(E, device=x.device)
    expert_of_row = torch.repeat_interleave(experts, tokens_per_expert, output_size=N)  # no sync
    starts = torch.cumsum(tokens_per_expert, 0) - tokens_per_expert
    slot = torch.arange(N, device=x.device) - starts[expert_of_row]
    padded = x.new_zeros(E, capacity, x.shape[-1]).index_put((expert_of_row, slot), x)  # [E, C, d]
    h = _hidden(tuple(torch.bmm(padded, w) for w in w_in), activation, dropout, training)  # [E, C, f]
    return torch.bmm(h, w_out)[expert_of_row, slot]  # padding rows are never read back


def local_shard(w: Tensor) -> Tensor:
    """``w`` itself, or this rank's shard of a DTensor weight (expert parallelism: ``Shard(0)``, the
    experts held here). Gradients flow back into the DTensor parameter."""
    dtensor = sys.modules.get("torch.distributed.tensor")  # not imported: no DTensor exists (spares ~0.8 s)
    return w.to_local() if dtensor is not None and isinstance(w, dtensor.DTensor) else w


class GroupedExperts(nn.Module):
    """E FFNs, no biases. ``gated_gelu`` (T5.1.1): ``wo[e]( gelu(x wi_0[e]) * (x wi_1[e]) )``;
    ``relu`` (Switch, T5 v1.0): ``wo[e]( relu(x wi[e]) )``.

    Weights: ``wi_0``, ``wi_1`` (or ``wi``) ``[E, d_model, d_ff]``, ``wo`` ``[E, d_ff, d_model]``.
    ``dropout`` is expert dropout on the hidden units (Switch fine-tuning used 0.4). Under expert
    parallelism the weights are ``Shard(0)`` DTensors and the kernels get their local shards (the
    experts held on this rank): per-expert token counts vary, which a DTensor cannot express.
    """

    def __init__(
        self,
        num_experts: int,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        backend: ExpertsBackend = "auto",
        init_std: float = 1.0,
        activation: FFNActivation = "gated_gelu",
    ):
        super().__init__()
        self.num_experts, self.d_model, self.d_ff = num_experts, d_model, d_ff
        self.backend, self.activation = backend, activation
        self.dropout = nn.Dropout(dropout)
        if activation == "gated_gelu":
            self.wi_0 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
            self.wi_1 = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        else:
            self.wi = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        self.wo = nn.Parameter(torch.empty(num_experts, d_ff, d_model))
        init_experts_(self, init_std)

    def input_weights(self) -> tuple[Tensor, ...]:
        """The ``[E, d_model, d_ff]`` weights: ``(wi_0, wi_1)`` or ``(wi,)``."""
        return (self.wi_0, self.wi_1) if self.activation == "gated_gelu" else (self.wi,)

    def forward(self, x: Tensor, tokens_per_expert: Tensor, capacity: int | None = None) -> Tensor:
        """``x`` ``[N, d_model]`` sorted by expert, ``tokens_per_expert`` ``[E_local]`` -> ``[N, d_model]``.

        ``capacity``: a static upper bound on ``tokens_per_expert`` (only the ``bmm`` path uses it;
        without it that path syncs to read the maximum count).
        """
        if torch.compiler.is_compiling():  # run the grouped kernel outside the graph (see module doc)
            return torch.compiler.disable(_eager_forward)(self, x, tokens_per_expert, capacity)
        return self._forward(x, tokens_per_expert, capacity)

    def _forward(self, x: Tensor, tokens_per_expert: Tensor, capacity: int | None) -> Tensor:
        w_in = tuple(local_shard(w) for w in self.input_weights())
        w_out = local_shard(self.wo)
        p, training = self.dropout.p, self.dropout.training
        use_gmm = self.backend == "grouped_mm" or (
            self.backend == "auto" and _grouped_mm_ok(x, self.d_model, self.d_ff)
        )
        if use_gmm:
            if torch.is_autocast_enabled(x.device.type):  # autocast does not cover _grouped_mm (bmm it does)
                dt = torch.get_autocast_dtype(x.device.type)
                x, w_in, w_out = x.to(dt), tuple(w.to(dt) for w in w_in), w_out.to(dt)
            return grouped_mm_experts(x, tokens_per_expert, w_in, w_out, self.activation, p, training)
        return bmm_experts(x, tokens_per_expert, w_in, w_out, self.activation, p, training, capacity)


def _eager_forward(
    experts: GroupedExperts, x: Tensor, tokens_per_expert: Tensor, capacity: int | None
) -> Tensor:
    """``GroupedExperts._forward`` outside any ``torch.compile`` graph."""
    return experts._forward(x, tokens_per_expert, capacity)
