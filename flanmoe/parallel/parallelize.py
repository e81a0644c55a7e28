"""Apply expert parallelism, FSDP2 and activation checkpointing to a built ``FlanMoEModel``.

The model files know nothing of distribution: every rank builds the same model from the same seed,
then ``parallelize`` shards it in place. Gradient convention: after backward every gradient is the
SUM over ranks of the local gradients (no averaging); the trainer divides its loss by the global
token count itself.

FSDP units: each encoder and decoder block (a block projects the encoder output for its own
cross-attention), the experts of each MoE layer under expert parallelism, and the root (embeddings,
LM head, norms, position biases). Blocks and stacks return everything they compute as values (named
tuples: hidden states, the MoE aux losses, keys/values), so FSDP sees every output tensor that needs
a gradient, and a unit's outputs are never lost in a list it was handed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Shard

from flanmoe.model.moe import MoELayer
from flanmoe.model.transformer import FlanMoEModel
from flanmoe.parallel.expert_parallel import AllToAllDispatcher, shard_experts
from flanmoe.parallel.mesh import Meshes, ParallelDims, check_ep


def parallelize(
    model: FlanMoEModel,
    meshes: Meshes,
    *,
    ep: int,
    param_dtype: torch.dtype | None = None,
    activation_checkpointing: bool = False,
) -> FlanMoEModel:
    """Shard ``model`` in place (and return it).

    - ``ep > 1``: every ``MoELayer.experts`` weight ``[E, ...]`` becomes a ``Shard(0)`` DTensor on
      ``meshes.ep`` (this rank's ``E / ep`` experts) and its dispatcher an ``AllToAllDispatcher``;
      the experts are their own FSDP unit over ``meshes.dp_mod_ep`` (sharded when it has > 1 rank).
    - Everything else (and the experts when ``ep == 1``) is FSDP-sharded over ``meshes.dp``.
    - ``param_dtype`` (e.g. bf16): FSDP computes in it (experts included), reduces gradients in float32.
    """
    dims = meshes.dims
    if ep != dims.ep:
        raise ValueError(f"ep: {ep} differs from the meshes' ep {dims.ep}")
    moe_layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    if ep > 1:
        for moe in moe_layers:
            check_ep(ep, dims.world_size, moe.experts.num_experts)
            shard_experts(moe.experts, meshes.ep)
            moe.dispatcher = AllToAllDispatcher(meshes.ep, moe.experts.num_experts // ep)

    if activation_checkpointing:  # wrap before sharding, so FSDP hooks sit outside the recomputed region
        apply_activation_checkpointing(model)

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if ep > 1:  # experts: FSDP over the ranks that hold the same experts (a mesh of 1 when dp_mod_ep = 1:
        # no sharding, but the policy's compute dtype, and their gradients stay out of the dp reduction)
        for moe in moe_layers:
            fully_shard(
                moe.experts, mesh=meshes.dp_mod_ep, mp_policy=mp, shard_placement_fn=_expert_placement(dims)
            )
    for block in (*model.encoder.blocks, *model.decoder.blocks):
        fully_shard(block, mesh=meshes.dp, mp_policy=mp)
    fully_shard(model, mesh=meshes.dp, mp_policy=mp)
    for m in model.modules():
        if isinstance(m, FSDPModule):  # sum, never average (gloo AVG is unreliable: pytorch#162338)
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    return model


def apply_activation_checkpointing(model: FlanMoEModel) -> None:
    """In place: every block recomputes its activations in backward (memory for compute)."""
    for stack in (model.encoder, model.decoder):
        for i, block in enumerate(stack.blocks):
            stack.blocks[i] = checkpoint_wrapper(block)


def _expert_placement(dims: ParallelDims) -> Callable[[nn.Parameter], Shard]:
    """FSDP placement of a local ``[E_local, ...]`` expert weight: dim 0 when it splits evenly, else dim 1."""

    def placement(p: nn.Parameter) -> Shard:
        return Shard(0) if p.shape[0] // dims.ep % dims.dp_mod_ep == 0 else Shard(1)

    return placement
