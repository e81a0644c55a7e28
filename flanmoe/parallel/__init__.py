"""Distributed training: meshes, expert parallelism, FSDP2, grad clipping and DCP checkpoints.

The model package stays free of distribution; ``parallelize`` shards a built model in place.
"""

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
