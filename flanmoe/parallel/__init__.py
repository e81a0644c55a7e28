"""Distributed training: meshes, expert parallelism, FSDP2, grad clipping and DCP checkpoints.

The model package stays free of distribution; ``parallelize`` shards a built model in place.
"""

from typing import TYPE_CHECKING

from flanmoe.lazy import lazy_getattr

# name -> module: imported on first use (PEP 562), so that importing one submodule (a config, say)
# does not import torch and everything else the package holds
_LAZY = {
    "Checkpointer": "flanmoe.parallel.checkpoint",
    "clip_grad_norm_": "flanmoe.parallel.clip",
    "AllToAllDispatcher": "flanmoe.parallel.expert_parallel",
    "shard_experts": "flanmoe.parallel.expert_parallel",
    "Meshes": "flanmoe.parallel.mesh",
    "ParallelDims": "flanmoe.parallel.mesh",
    "barrier": "flanmoe.parallel.mesh",
    "build_meshes": "flanmoe.parallel.mesh",
    "check_ep": "flanmoe.parallel.mesh",
    "get_rank": "flanmoe.parallel.mesh",
    "get_world_size": "flanmoe.parallel.mesh",
    "init_distributed": "flanmoe.parallel.mesh",
    "is_distributed": "flanmoe.parallel.mesh",
    "parallelize": "flanmoe.parallel.parallelize",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from flanmoe.parallel.checkpoint import Checkpointer
    from flanmoe.parallel.clip import clip_grad_norm_
    from flanmoe.parallel.expert_parallel import AllToAllDispatcher, shard_experts
    from flanmoe.parallel.mesh import (
        Meshes,
        ParallelDims,
        barrier,
        build_meshes,
        check_ep,
        get_rank,
        get_world_size,
        init_distributed,
        is_distributed,
    )
    from flanmoe.parallel.parallelize import parallelize


__all__ = [
    "AllToAllDispatcher",
    "Checkpointer",
    "Meshes",
    "ParallelDims",
    "barrier",
    "build_meshes",
    "check_ep",
    "clip_grad_norm_",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "parallelize",
    "shard_experts",
]
