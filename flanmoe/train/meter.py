"""The trainer's logging window: what a run has seen, and what each log point reports.

``IntervalMeter`` collects a step's loss tensors and router statistics without a host sync; at a log
point ``close()`` reduces the window across processes (one all-reduce of all values of all steps, one
of the router sums) and returns a ``LogPoint``: the MLflow metrics (``train/*``, ``router/*``; the
trainer adds ``val/loss``) and the row of the training curve (``plots/<stage>/...json``: step,
train_loss, val_loss, lr and, for MoE, ``router_*``). Throughput (tokens/s, FLOP/s, MFU) counts
training time only: ``paused()`` takes validation, logging and checkpoints out of the window.

State that survives a resume (``state_dict``): tokens and padding seen, the curve, the latest log
point's losses and router statistics.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flanmoe.model.stats import RouterStatsAccumulator

if TYPE_CHECKING:
    from flanmoe.train.trainer import BatchLike

# dense bf16 peak FLOP/s of the GPUs we know (MFU is reported only for these)
# datasheet dense bf16 tensor-core peaks (no sparsity), matched in this order against the device name
PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": 989e12,  # the H100 SXM's tensor cores
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}

# router statistics kept in the curve (plots/<stage>/...json) of an MoE model: load balance, drop rate,
# router entropy (flanmoe.model.stats)
ROUTING_HEALTH = ("load_max_over_mean", "dropped_fraction", "entropy")


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """Peak FLOP/s of ``device`` for MFU: known GPUs in bfloat16 only, else None."""
    if device.type != "cuda" or dtype != "bfloat16":
        return None
    return datasheet_peak(torch.cuda.get_device_name(device))


def datasheet_peak(name: str) -> float | None:
    """The bf16 datasheet peak of the GPU called ``name`` (``PEAK_FLOPS``, first match), else None."""
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def all_reduce_sum(t: Tensor, world_size: int) -> Tensor:
    """Sum ``t`` over processes in place (nothing to do in one process)."""
    if world_size > 1:
        import torch.distributed as tdist

        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


@dataclass
class LogPoint:
    """One log point: ``metrics`` for MLflow, ``row`` for the curve (every row has the same keys)."""

    metrics: dict[str, float]
    row: dict[str, Any]

    def add_val_loss(self, val_loss: float) -> None:
        self.metrics["val/loss"] = val_loss
        self.row["val_loss"] = val_loss


class IntervalMeter:
    """Accumulates the steps of one log interval and what the whole run has seen.

    ``world_size``: processes whose values are summed at a log point (each adds its share: its
    micro-batches' loss over the global batch's targets, its grad norm / world size).
    ``flops_per_token``: training FLOPs per (padded) position, for FLOP/s; ``peak``: the device's
    peak FLOP/s, for MFU. ``clock``: seconds (``time.perf_counter``; a test passes its own).
    """

    def __init__(
        self,
        world_size: int = 1,
        flops_per_token: float | None = None,
        peak: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.world_size, self.flops_per_token, self.peak = world_size, flops_per_token, peak
        self.clock = clock
        # what the run has seen (checkpointed)
        self.tokens_seen = 0  # non-padding input + target tokens (all processes)
        self.padded_seen = [0, 0]  # padding positions, all positions
        self.curve: list[dict[str, Any]] = []
        self.train_loss = math.nan  # the latest log point's mean LM loss
        self.val_loss: float | None = None  # the latest validation loss
        self.router: dict[str, float] = {}  # the latest log point's router statistics
        # the open interval (not checkpointed: a checkpoint is taken at a step, a resumed run opens anew)
        self.throughput: dict[str, float] = {}  # of the latest closed interval
        self._window: list[dict[str, Tensor]] = []
        self._router_sums = RouterStatsAccumulator()
        self._t0, self._tokens0, self._positions0 = 0.0, 0, 0
        self.start()

    def start(self) -> None:
        """Open a new interval now (a ``fit`` starts): empty window, no throughput yet."""
        self._window.clear()
        self._router_sums.reset()
        self.throughput = {}
        self._t0, self._tokens0, self._positions0 = self.clock(), self.tokens_seen, self.padded_seen[1]

    def count(self, groups: Sequence[BatchLike]) -> None:
        """Count the tokens and padding of one global batch (all its micro-batches)."""
        self.tokens_seen += sum(b.num_target_tokens + b.num_input_tokens for b in groups)
        pads = sum(b.padded_input_tokens + b.padded_target_tokens for b in groups)  # pad positions
        self.padded_seen[0] += pads
        self.padded_seen[1] += pads + sum(b.num_input_tokens + b.num_target_tokens for b in groups)

    def add(self, values: dict[str, Tensor], stats: Sequence[Any]) -> None:
        """One step's scalar tensors (``lm_loss``, ``aux``, ``load_balance``, ``z_loss``,
        ``grad_norm``) and its micro-batches' router statistics; no host sync."""
        self._window.append(values)
        for s in stats:
            self._router_sums.add(s)

    @property
    def pad_fraction(self) -> float:
        return self.padded_seen[0] / self.padded_seen[1] if self.padded_seen[1] else 0.0

    def close(self, step: int, lr: float) -> LogPoint:
        """End the interval at ``step``: reduce it across processes (collective; the one host sync of
        an interval) and return its log point; the next interval starts."""
        # all values of all steps, summed over processes
        names = list(self._window[0])
        stacked = all_reduce_sum(
            torch.stack([torch.stack([w[n] for w in self._window]) for n in names]), self.world_size
        )
        means = dict(zip(names, stacked.mean(dim=1).tolist(), strict=True))
        self._window.clear()
        elapsed = max(self.clock() - self._t0, 1e-9)
        tok_s = (self.tokens_seen - self._tokens0) / elapsed
        pos_s = (self.padded_seen[1] - self._positions0) / elapsed
        self.throughput = {"tokens_per_second": tok_s, "positions_per_second": pos_s}
        if self.flops_per_token:
            self.throughput["flops_per_second"] = pos_s * self.flops_per_token
            if self.peak:
                self.throughput["mfu"] = self.throughput["flops_per_second"] / (self.peak * self.world_size)
        across = functools.partial(all_reduce_sum, world_size=self.world_size)
        router = self._router_sums.reduce(across) if self._router_sums.count else {}
        self._router_sums.reset()
        self.train_loss, self.router = means["lm_loss"], router
        metrics = {
            "train/loss": means["lm_loss"] + means["aux"],
            "train/lm_loss": means["lm_loss"],
            "train/aux_loss": means["aux"],
            "train/grad_norm": means["grad_norm"],
            "train/lr": lr,
            "train/tokens_seen": float(self.tokens_seen),
            "train/pad_fraction": self.pad_fraction,
            **{f"train/{k}": v for k, v in self.throughput.items()},
        }
        if router:
            metrics["train/load_balance_loss"] = means["load_balance"]
            metrics["train/z_loss"] = means["z_loss"]
            metrics.update({f"router/{k}": v for k, v in router.items()})
        # every row has the same keys (DVC plots refuse rows that differ): val_loss null where this
        # step did not validate
        row: dict[str, Any] = {"step": step, "train_loss": means["lm_loss"], "val_loss": None, "lr": lr}
        for k in ROUTING_HEALTH:  # MoE: routing health over training (every row has them)
            if f"moe/{k}" in router:
                row[f"router_{k}"] = router[f"moe/{k}"]
        # the router reduction above is not training time either
        self._t0, self._tokens0, self._positions0 = self.clock(), self.tokens_seen, self.padded_seen[1]
        return LogPoint(metrics, row)

    def record(self, point: LogPoint) -> None:
        """The log point's row joins the curve (once the trainer has added its validation loss)."""
        self.curve.append(point.row)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (validation, logging, checkpoints) is not training time."""
        t = self.clock()
        try:
            yield
        finally:
            self._t0 += self.clock() - t

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens_seen": self.tokens_seen,
            "padded_seen": list(self.padded_seen),
            "curve": list(self.curve),
            "last": {"train_loss": self.train_loss, "val_loss": self.val_loss, "router": self.router},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (keys missing in older checkpoints keep their start values)."""
        self.tokens_seen = int(state["tokens_seen"])
        self.padded_seen = list(state.get("padded_seen", [0, 0]))
        self.curve = list(state.get("curve", []))
        last = state.get("last", {})
        self.train_loss = last.get("train_loss", self.train_loss)
        self.val_loss = last.get("val_loss", self.val_loss)
        self.router = dict(last.get("router", self.router))
