"""Token dispatchers: move routed tokens to the experts and their outputs back.

The contract (one MoE layer, one group of tokens):

    expert_in, tokens_per_local_expert, ctx = dispatcher.dispatch(x, routing)
    expert_out = experts(expert_in, tokens_per_local_expert)
    y = dispatcher.combine(expert_out, ctx)

``expert_in`` is ``[N, d_model]`` sorted by local expert, ``tokens_per_local_expert`` ``[E_local]``
cuts it into contiguous segments. ``combine`` returns ``[T, d_model]``: for each token the
gate-weighted sum of its experts' outputs (zero for a dropped token). ``LocalDispatcher`` keeps all
experts on this process; an expert-parallel dispatcher replaces it by all-to-all exchanges of the
per-expert segments (``Routing`` is already sorted by expert, so the splits are contiguous).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from flanmoe.model.router import Routing


@dataclass
class DispatchContext:
    """What ``combine`` needs to undo ``dispatch``: destinations, gates, group size."""

    token_idx: Tensor  # [N] token of each row of the expert buffer
    gates: Tensor  # [N] combine weight of each row
    num_tokens: int  # T


class TokenDispatcher:
    """Interface; see the module docstring."""

    def dispatch(self, x: Tensor, routing: Routing) -> tuple[Tensor, Tensor, DispatchContext]:
        raise NotImplementedError

    def combine(self, expert_out: Tensor, ctx: DispatchContext) -> Tensor:
        raise NotImplementedError


class LocalDispatcher(TokenDispatcher):
    """All experts live here: dispatch is a gather by ``token_idx``, combine a weighted scatter-add."""

    def dispatch(self, x: Tensor, routing: Routing) -> tuple[Tensor, Tensor, DispatchContext]:
        """``x`` ``[T, d]`` -> expert buffer ``[N, d]`` sorted by expert, ``tokens_per_expert`` ``[E]``."""
        expert_in = x.index_select(0, routing.token_idx)
        ctx = DispatchContext(routing.token_idx, routing.gates, routing.num_tokens)
        return expert_in, routing.tokens_per_expert, ctx

    def combine(self, expert_out: Tensor, ctx: DispatchContext) -> Tensor:
        """``expert_out`` ``[N, d]`` -> ``[T, d]``, each token the gate-weighted sum of its rows."""
        weighted = expert_out * ctx.gates.to(expert_out.dtype)[:, None]
        out = expert_out.new_zeros(ctx.num_tokens, expert_out.shape[-1])
        return out.index_add(0, ctx.token_idx, weighted)
