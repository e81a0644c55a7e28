"""Resumable training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

Layout: ``root/step-00000100/`` holds the DCP shards of ``{"model", "optim"}`` (global tensors,
so a checkpoint reloads at another world size or ep degree) and ``extra-rank{r}.pt`` per rank
(step, scheduler/sampler state, RNG states). Every rank writes into ``root/.tmp-step-.../``; rank 0
renames it once every rank has finished (barrier), so a ``step-*`` directory is always complete and
a crash mid-save leaves the previous one as ``latest()``.

Expert weights must be DTensors on the ep mesh in the state dict (``parallelize`` makes them so):
plain per-rank expert params would reload silently wrong (every rank gets rank 0's experts).
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from flanmoe.atomic import replace_dir
from flanmoe.parallel.mesh import barrier, get_rank, get_world_size, is_distributed

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TMP_PREFIX = ".tmp-"


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes a single process even when told so (``no_dist``): silence that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


class Checkpointer:
    """Saves to ``root/step-{step:08d}``, keeps the newest ``keep`` complete checkpoints."""

    def __init__(self, root: Path, keep: int):
        if keep < 1:
            raise ValueError(f"keep: {keep} < 1")
        self.root, self.keep = Path(root), keep

    def save(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
    ) -> Path:
        """Write a checkpoint of ``step`` (collective: every rank calls it); returns its directory."""
        rank = get_rank()
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f"{_TMP_PREFIX}{final.name}"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a crashed save of this step
            tmp.mkdir(parents=True)
        barrier()
        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=tmp, no_dist=not is_distributed())
        torch.save({"world_size": get_world_size(), "extra": extra}, tmp / f"extra-rank{rank}.pt")
        barrier()  # every rank's shards and extras are on disk
        if rank == 0:
            self._commit(tmp, final)
            self._prune()
        barrier()
        return final

    def _commit(self, tmp: Path, final: Path) -> None:
        """Make ``tmp`` the checkpoint ``final`` (one rename: it is complete or absent); re-saving a step
        (e.g. after a resume), the new copy wins."""
        replace_dir(tmp, final)

    def _prune(self) -> None:
        for path in self.complete()[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
        return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None. Rank 0 removes leftovers of crashed saves."""
        if get_rank() == 0 and self.root.is_dir():
            for p in self.root.glob(f"{_TMP_PREFIX}*"):
                shutil.rmtree(p, ignore_errors=True)
        done = self.complete()
        return done[-1] if done else None

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Load model (and optimizer) state from ``path`` into this rank's (possibly sharded) model and
        return ``extra``: this rank's when the world size matches the saving one, else rank 0's without
        its per-rank ``"rng"`` entry. Works without a process group (world size 1)."""
        path = Path(path)
        state: dict[str, Any] = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optim"] = get_optimizer_state_dict(model, optimizer)
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=path, no_dist=not is_distributed())
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optim"])
        rank = get_rank()
        saved_world = len(list(path.glob("extra-rank*.pt")))
        if saved_world == get_world_size():
            return torch.load(path / f"extra-rank{rank}.pt", weights_only=False)["extra"]
        extra = dict(torch.load(path / "extra-rank0.pt", weights_only=False)["extra"])
        extra.pop("rng", None)  # RNG streams are per rank: meaningless at another world size
        return extra
