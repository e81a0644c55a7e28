"""Experts: E FFNs (gated GELU, or ReLU) as stacked weights, computed in one grouped operation.

Input is a buffer ``[N, d_model]`` sorted by expert plus ``tokens_per_expert`` ``[E]``
(contiguous segments, see ``dispatch.py``). Two interchangeable kernels:

- ``grouped_mm``: ``torch._grouped_mm`` segment matmul (no padding). Its CPU backward is not
  usable in torch 2.13, so ``_GroupedMM`` supplies one (two more grouped matmuls). float32/bf16/fp16
  only, and rows must be 16-byte aligned (d_model, d_ff multiples of 4 in float32).
- ``bmm``: scatter rows into a zero-padded ``[E, C, d]`` buffer and use ``torch.bmm``; works for
  every dtype (float64 tests) at the cost of padding. ``C`` is the router's static bound on an
  expert's tokens when the caller passes one (``capacity``), else the busiest expert's count, which
  reads a tensor back to the host (a sync; dropless routing, or dispatchers that give no bound).

The ``grouped_mm`` path never syncs with the host. Under ``torch.compile`` the expert computation
runs eagerly (a graph break): ``_grouped_mm`` has no float32 meta kernel on CPU, and the custom
backward below is only checked eagerly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.config import FFNActivation
from flanmoe.model.layers import init_normal_

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


class GroupedExperts(nn.Module):
    """E FFNs, no biases. ``gated_gelu`` (T5.1.1): ``wo[e]( gelu(x wi_0[e]) * (x wi_1[e]) )``;
    ``relu`` (Switch, T5 v1.0): ``wo[e]( relu(x wi[e]) )``.

    Weights: ``wi_0``, ``wi_1`` (or ``wi``) ``[E, d_model, d_ff]``, ``wo`` ``[E, d_ff, d_model]``.
    ``dropout`` is expert dropout on the hidden units (Switch fine-tuning used 0.4).
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
        self.reset_parameters(init_std)

    def input_weights(self) -> tuple[Tensor, ...]:
        """The ``[E, d_model, d_ff]`` weights: ``(wi_0, wi_1)`` or ``(wi,)``."""
        return (self.wi_0, self.wi_1) if self.activation == "gated_gelu" else (self.wi,)

    def reset_parameters(self, factor: float = 1.0) -> None:
        """T5 init: ``N(0, factor / sqrt(fan_in))``."""
        for w in self.input_weights():
            init_normal_(w, std=factor * self.d_model**-0.5)
        init_normal_(self.wo, std=factor * self.d_ff**-0.5)

    def forward(self, x: Tensor, tokens_per_expert: Tensor, capacity: int | None = None) -> Tensor:
        """``x`` ``[N, d_model]`` sorted by expert, ``tokens_per_expert`` ``[E]`` -> ``[N, d_model]``.

        ``capacity``: a static upper bound on ``tokens_per_expert`` (only the ``bmm`` path uses it;
        without it that path syncs to read the maximum count).
        """
        if torch.compiler.is_compiling():  # run the grouped kernel outside the graph (see module doc)
            return torch.compiler.disable(_eager_forward)(self, x, tokens_per_expert, capacity)
        return self._forward(x, tokens_per_expert, capacity)

    def _forward(self, x: Tensor, tokens_per_expert: Tensor, capacity: int | None) -> Tensor:
        use_gmm = self.backend == "grouped_mm" or (
            self.backend == "auto" and _grouped_mm_ok(x, self.d_model, self.d_ff)
        )
        if use_gmm:
            return self._forward_grouped_mm(x, tokens_per_expert)
        return self._forward_bmm(x, tokens_per_expert, capacity)

    def _hidden(self, h: tuple[Tensor, ...]) -> Tensor:
        """Hidden units from the input projections ``h`` (one per weight of ``input_weights``)."""
        if self.activation == "gated_gelu":
            return self.dropout(F.gelu(h[0], approximate="tanh") * h[1])
        return self.dropout(F.relu(h[0]))

    def _forward_grouped_mm(self, x: Tensor, tokens_per_expert: Tensor) -> Tensor:
        offs = torch.cumsum(tokens_per_expert, 0).to(torch.int32)
        h = self._hidden(tuple(grouped_mm(x, w, offs) for w in self.input_weights()))
        return grouped_mm(h, self.wo, offs)

    def _forward_bmm(self, x: Tensor, tokens_per_expert: Tensor, capacity: int | None) -> Tensor:
        E, N = self.num_experts, x.shape[0]
        if capacity is None:  # host sync: the busiest expert's count sizes the buffer
            capacity = int(tokens_per_expert.max()) if N > 0 else 0
        experts = torch.arange(E, device=x.device)
        expert_of_row = torch.repeat_interleave(experts, tokens_per_expert, output_size=N)  # no sync
        starts = torch.cumsum(tokens_per_expert, 0) - tokens_per_expert
        slot = torch.arange(N, device=x.device) - starts[expert_of_row]
        padded = x.new_zeros(E, capacity, x.shape[-1]).index_put((expert_of_row, slot), x)  # [E, C, d]
        h = self._hidden(tuple(torch.bmm(padded, w) for w in self.input_weights()))  # [E, C, f]
        return torch.bmm(h, self.wo)[expert_of_row, slot]  # padding rows are never read back


def _eager_forward(
    experts: GroupedExperts, x: Tensor, tokens_per_expert: Tensor, capacity: int | None
) -> Tensor:
    """``GroupedExperts._forward`` outside any ``torch.compile`` graph."""
    return experts._forward(x, tokens_per_expert, capacity)
