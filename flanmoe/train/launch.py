"""Process layout: world size 1 runs in-process; ``nproc > 1`` re-executes the same command under
``torchrun --standalone`` (one node). For several nodes, start ``torchrun`` yourself on each node
with its rendezvous flags (``--nnodes``, ``--node_rank``/``--rdzv_backend c10d --rdzv_endpoint``) and
set ``parallel.nproc`` to the total number of processes: a stage already under torchrun never
re-launches. CPU uses gloo, GPU NCCL.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch
from torch import nn

from flanmoe.train.config import ParallelConfig, TrainConfig
from flanmoe.train.trainer import Dist


def under_torchrun() -> bool:
    """True inside a process started by torchrun (it sets these variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_under_torchrun(nproc: int, module: str, args: list[str]) -> NoReturn:
    """Replace this process by ``torchrun --standalone --nproc_per_node nproc -m module args``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", module, *args]
    sys.stdout.flush(), sys.stderr.flush()
    os.execv(sys.executable, cmd)


def resolve_device(cfg: ParallelConfig, local_rank: int = 0) -> torch.device:
    """``cfg.device`` with ``auto`` resolved; CUDA gets this process's local GPU."""
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("parallel.device: cuda requested but no GPU is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup_distributed(cfg: ParallelConfig) -> Dist:
    """Rank, world size and device of this process; initialises the process group when world > 1."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if not under_torchrun():
        return Dist(0, 1, resolve_device(cfg))
    world, rank, local = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if world != cfg.nproc:
        raise RuntimeError(f"parallel.nproc: {cfg.nproc}, but torchrun started {world} processes")
    device = resolve_device(cfg, local)
    if world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo",
                device_id=device if device.type == "cuda" else None,
            )
    return Dist(rank, world, device)


def prepare_model(model: nn.Module, cfg: TrainConfig, dist: Dist) -> nn.Module:
    """Move ``model`` to the device, apply FSDP2 + expert parallelism when distributed, and compile.

    Every process must have built ``model`` identically (same seed): expert parallelism keeps each
    process's slice of the same initial experts.
    """
    par = cfg.parallel
    model = model.to(dist.device)
    is_moe = getattr(getattr(model, "cfg", None), "moe", None) is not None
    if dist.world_size > 1:
        from flanmoe.parallel import ParallelDims, build_meshes, parallelize

        ep = par.ep if is_moe else 1
        dims = ParallelDims(dist.world_size, ep)
        dims.validate()
        meshes = build_meshes(dims, dist.device.type)
        param_dtype = torch.bfloat16 if par.dtype == "bfloat16" and dist.device.type == "cuda" else None
        model = parallelize(
            model,
            meshes,
            ep=ep,
            param_dtype=param_dtype,
            activation_checkpointing=par.activation_checkpointing,
        )
    elif par.activation_checkpointing:
        from flanmoe.parallel.parallelize import apply_activation_checkpointing

        apply_activation_checkpointing(model)
    if par.compile:  # per block (torchtitan): parameter names stay those of the plain model
        for stack in (model.encoder, model.decoder):
            for block in stack.blocks:
                block.compile()
    return model
