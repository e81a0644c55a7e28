"""The trainer's checkpoint policy: when a resumable checkpoint is saved, and what it holds.

When: every ``checkpoint_every`` steps, at the last step, and when early stopping ends the run.
What: the model and optimizer as DCP shards (``flanmoe.parallel.Checkpointer``: global tensors, so a
run resumes at another world size), and per process an ``extra`` dict with everything else the loop
needs to go on bit for bit: the step, the scheduler, the sampler's position, the meter's counts and
curve, early stopping's best, and the RNG streams (restored only at the same world size).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from flanmoe.train.early_stopping import EarlyStopping
from flanmoe.train.meter import IntervalMeter


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def rng_state() -> dict[str, Any]:
    """This process's RNG streams (CPU, and every CUDA device's where there is one)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class CheckpointPolicy:
    """Saves and resumes the state of one training loop through ``checkpointer`` (None: never).

    The parts are the loop's stateful objects; ``every``: steps between checkpoints; ``world_size``:
    this run's processes (RNG streams are per process: restored only when the saving run had as many).
    """

    def __init__(
        self,
        checkpointer: Any,
        every: int,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Stateful,
        sampler: Stateful,
        meter: IntervalMeter,
        early_stopping: EarlyStopping,
        world_size: int = 1,
    ):
        self.checkpointer, self.every, self.world_size = checkpointer, every, world_size
        self.model, self.optimizer, self.scheduler, self.sampler = model, optimizer, scheduler, sampler
        self.meter, self.early_stopping = meter, early_stopping

    def due(self, step: int, *, final: bool) -> bool:
        """Save at ``step``? Every ``every`` steps, and at the end of the run (``final``)."""
        return step % self.every == 0 or final

    def extra_state(self, step: int) -> dict[str, Any]:
        """The checkpoint's ``extra`` (all but the model and optimizer) at ``step``."""
        return {
            "step": step,
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            **self.meter.state_dict(),  # tokens_seen, padded_seen, curve, last
            "best": self.early_stopping.state_dict(),
            "world_size": self.world_size,
            "rng": rng_state(),
        }

    def save(self, step: int) -> None:
        """Checkpoint ``step`` (collective: every process calls it)."""
        if self.checkpointer is not None:
            self.checkpointer.save(step, self.model, self.optimizer, self.extra_state(step))

    def resume(self) -> int | None:
        """Load the latest complete checkpoint, if any, into every part; returns its step."""
        if self.checkpointer is None:
            return None
        path = self.checkpointer.latest()
        if path is None:
            return None
        extra = self.checkpointer.load(path, self.model, self.optimizer)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.sampler.load_state_dict(extra["sampler"])
        self.meter.load_state_dict(extra)
        self.early_stopping.load_state_dict(extra.get("best", {}))
        rng = extra.get("rng")
        if rng is not None and extra.get("world_size") == self.world_size:  # same layout: exact
            set_rng_state(rng)
        return int(extra["step"])
