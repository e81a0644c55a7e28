"""Expert parallelism: experts sharded over the ``ep`` ranks, tokens exchanged by all-to-all.

Rank ``r`` of the ep group holds experts ``[r * E_local, (r + 1) * E_local)``: ``shard_experts``
re-registers the expert weights as ``Shard(0)`` DTensors on the ep mesh (so checkpoints and grad norms
see the global tensors) and ``GroupedExperts`` computes with their local shards. The dispatcher
sends each expert's rows to the rank that holds it and brings the outputs back (as torchtitan's
``ExpertParallel``): first an all-to-all of the per-expert counts, whose split sizes go to the host
(the one sync EP needs), then an autograd all-to-all of the rows with uneven splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed._functional_collectives import all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Shard, distribute_tensor

from flanmoe.model.dispatch import DispatchContext, TokenDispatcher
from flanmoe.model.experts import GroupedExperts
from flanmoe.model.router import Routing


@dataclass
class AllToAllContext(DispatchContext):
    """``DispatchContext`` plus what undoes the exchange: split sizes and the local permutation."""

    input_splits: list[int]  # [ep] rows this rank sent to each rank
    output_splits: list[int]  # [ep] rows this rank received from each rank
    inverse_perm: Tensor  # [N_recv] row of the expert-sorted buffer for each received row


class AllToAllDispatcher(TokenDispatcher):
    """Token dispatcher over an ep group: ``Routing`` sorted by global expert -> this rank's experts.

    ``ep_group`` is the 1-D ep ``DeviceMesh`` (or its ``ProcessGroup``); ``num_local_experts`` is
    ``E / ep``.
    """

    def __init__(self, ep_group: DeviceMesh | dist.ProcessGroup, num_local_experts: int):
        self.group = ep_group.get_group() if isinstance(ep_group, DeviceMesh) else ep_group
        self.ep = dist.get_world_size(self.group)
        self.num_local_experts = num_local_experts

    def dispatch(self, x: Tensor, routing: Routing) -> tuple[Tensor, Tensor, AllToAllContext]:
        """``x`` ``[T, d]`` -> rows for this rank's experts ``[N_recv, d]`` sorted by local expert
        (source ranks in order within an expert), ``tokens_per_local_expert`` ``[E_local]``."""
        ep, e_local = self.ep, self.num_local_experts
        send_counts = routing.tokens_per_expert.to(torch.long)  # [E] = [ep * E_local], rank-major
        recv_counts = torch.empty_like(send_counts)  # [ep * E_local]: (source rank, local expert)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        splits = torch.stack([send_counts.view(ep, e_local).sum(1), recv_counts.view(ep, e_local).sum(1)])
        input_splits, output_splits = splits.tolist()  # the host sync: split sizes of the row exchange
        rows = x.index_select(0, routing.token_idx)  # [N, d] sorted by global expert
        received = all_to_all_single_autograd(rows, output_splits, input_splits, self.group)
        # Received rows are grouped (source rank, local expert); the experts want (local expert, source).
        local_expert = torch.arange(ep * e_local, device=x.device) % e_local
        expert_of_row = torch.repeat_interleave(local_expert, recv_counts, output_size=sum(output_splits))
        perm = torch.argsort(expert_of_row, stable=True)
        inverse_perm = torch.empty_like(perm)
        inverse_perm[perm] = torch.arange(perm.numel(), device=perm.device)
        expert_in = received.index_select(0, perm)
        per_local_expert = recv_counts.view(ep, e_local).sum(0)
        ctx = AllToAllContext(
            routing.token_idx, routing.gates, routing.num_tokens, input_splits, output_splits, inverse_perm
        )
        return expert_in, per_local_expert, ctx

    def combine(self, expert_out: Tensor, ctx: DispatchContext) -> Tensor:
        """``expert_out`` ``[N_recv, d]`` -> ``[T, d]``: rows back to their ranks, gate-weighted sum per token."""
        assert isinstance(ctx, AllToAllContext)
        received_order = expert_out.index_select(0, ctx.inverse_perm)
        rows = all_to_all_single_autograd(received_order, ctx.input_splits, ctx.output_splits, self.group)
        weighted = rows * ctx.gates.to(rows.dtype)[:, None]
        out = rows.new_zeros(ctx.num_tokens, rows.shape[-1])
        return out.index_add(0, ctx.token_idx, weighted)


def shard_experts(experts: GroupedExperts, ep_mesh: DeviceMesh) -> None:
    """In place: every ``[E, ...]`` weight is re-registered as ``distribute_tensor(weight, ep_mesh,
    [Shard(0)])``, this rank holding its ``E / ep`` experts of the (identical on every rank) full
    weight. The module stays a ``GroupedExperts``: its forward hands the local shards to the kernels."""
    for name, p in list(experts.named_parameters(recurse=False)):
        dt = distribute_tensor(p.detach(), ep_mesh, [Shard(0)])
        experts.register_parameter(name, nn.Parameter(dt, requires_grad=p.requires_grad))
