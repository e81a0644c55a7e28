"""Process groups and device meshes: the ``(dp_mod_ep, ep)`` mesh of the experts, the flat data mesh.

Every rank is a data-parallel rank (its own micro-batch, its own MoE routing group). Expert weights
are sharded over ``ep`` ranks (each holds ``E / ep`` experts) and, when ``dp_mod_ep = world / ep``
is more than 1, FSDP-sharded over the ``dp_mod_ep`` ranks that hold the same experts. Everything
else is FSDP-sharded over all ranks: the ``dp`` mesh, the 2-D mesh flattened, so that it keeps the
2-D mesh as its root (no new process group, and FSDP2 accepts DTensors of the same root mesh).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh


@dataclass
class ParallelDims:
    """World size and expert-parallel degree; ``dp_mod_ep = world_size // ep``."""

    world_size: int
    ep: int = 1

    @property
    def dp_mod_ep(self) -> int:
        return self.world_size // self.ep

    def validate(self) -> ParallelDims:
        """Raise ``ValueError`` naming ``ep`` unless ``ep`` divides the world size."""
        if self.world_size < 1:
            raise ValueError(f"world_size: {self.world_size} < 1")
        if self.ep < 1 or self.world_size % self.ep != 0:
            raise ValueError(f"ep: {self.ep} does not divide the world size {self.world_size}")
        return self


def check_ep(ep: int, world_size: int, num_experts: int) -> None:
    """Raise ``ValueError`` naming ``ep`` unless it divides both the world size and ``num_experts``."""
    ParallelDims(world_size, ep).validate()
    if num_experts % ep != 0:
        raise ValueError(f"ep: {ep} does not divide num_experts {num_experts}")


@dataclass
class Meshes:
    """``world``: 2-D ``("dp_mod_ep", "ep")`` mesh of shape ``(world / ep, ep)``; ``dp``: its 1-D flattening."""

    world: DeviceMesh
    dp: DeviceMesh
    dims: ParallelDims

    @property
    def ep(self) -> DeviceMesh:
        return self.world["ep"]

    @property
    def dp_mod_ep(self) -> DeviceMesh:
        return self.world["dp_mod_ep"]


def build_meshes(dims: ParallelDims, device_type: str) -> Meshes:
    """The meshes of ``dims`` over the initialized default process group (``device_type`` cpu/cuda)."""
    dims.validate()
    if dims.world_size != dist.get_world_size():
        raise ValueError(f"world_size: {dims.world_size} != process group size {dist.get_world_size()}")
    world = init_device_mesh(device_type, (dims.dp_mod_ep, dims.ep), mesh_dim_names=("dp_mod_ep", "ep"))
    dp = world["dp_mod_ep", "ep"]._flatten("dp")
    return Meshes(world, dp, dims)


def is_distributed() -> bool:
    """True when a default process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if is_distributed():
        dist.barrier()


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> tuple[int, int]:
    """Join the process group described by torchrun's env vars; returns ``(rank, world_size)``.

    ``backend`` None = nccl when CUDA is available, else gloo. Without ``WORLD_SIZE`` in the
    environment (a plain ``python`` run) nothing is initialized and ``(0, 1)`` is returned.
    """
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # one GPU per local rank
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()
