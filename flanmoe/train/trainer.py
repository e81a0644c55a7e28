"""One trainer for pretrain, instruct and finetune: a straight loop over global batches.

Per step: the sampler yields the global batch as ``groups = world * grad_accum`` micro-batches; this
process runs its own ``grad_accum`` of them. The loss of a micro-batch is

    sum of its target-token cross-entropies / target tokens of the whole global batch
    + its MoE aux loss / groups

so that, with gradients *summed* over processes (the ``flanmoe.parallel`` convention), one step equals
the same global batch run in one process with ``groups`` accumulation steps. Nothing here syncs with
the host between log points: losses, grad norms and router statistics stay tensors until logged.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from flanmoe.model.loss import IGNORE_INDEX, token_cross_entropy
from flanmoe.model.transformer import shift_right
from flanmoe.train.config import TrainConfig
from flanmoe.train.optim import build_optimizer, build_scheduler

LogFn = Callable[[dict[str, float], int], None]

# dense bf16 peak FLOP/s of the GPUs we know (MFU is reported only for these)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


class BatchLike(Protocol):
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    num_target_tokens: int
    num_input_tokens: int
    padded_input_tokens: int  # pad positions
    padded_target_tokens: int

    def to(self, device: torch.device) -> BatchLike: ...


class Sampler(Protocol):
    def next(self, groups: int) -> list[BatchLike]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# router statistics kept in the curve (plots/<stage>/...json) of an MoE model: load balance, drop rate,
# router entropy (flanmoe.model.stats)
ROUTING_HEALTH = ("load_max_over_mean", "dropped_fraction", "entropy")


@dataclass
class Dist:
    """Where this process sits: rank, world size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    """What a finished run reports (plain numbers; the stage writes them to metrics JSON)."""

    steps: int
    train_loss: float  # mean LM loss over the last log interval
    val_loss: float | None  # at the last step
    tokens_seen: int  # non-padding input + target tokens over all steps (all processes)
    curve: list[dict[str, float]]  # per log point: step, train_loss, (val_loss), lr, (MoE) router_*
    router: dict[str, float]  # router statistics over the last log interval (MoE only)
    pad_fraction: float  # share of padding in the batches seen
    resumed_from: int | None  # the step of the checkpoint the run resumed from
    best_step: int | None  # early stopping: the step of the best validation loss (its model was kept)
    best_val_loss: float | None  # early stopping: that loss (the exported model's)
    stopped_early: bool  # early stopping ended the run before cfg.steps
    throughput: dict[str, float]  # tokens/s, FLOP/s, MFU of the last interval (not reproducible)


def token_ce_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """Sum of cross-entropies over target tokens (``labels`` -100 ignored); float32 softmax."""
    return token_cross_entropy(logits, labels, reduction="sum")


def forward_batch(model: nn.Module, batch: BatchLike) -> tuple[Tensor, Any]:
    """Run ``model`` on a batch: ``(sum of target CE, Seq2SeqOutput)`` (no LM loss computed twice)."""
    labels = batch.labels
    out = model(
        batch.input_ids,
        batch.attention_mask,
        decoder_input_ids=shift_right(labels),
        decoder_attention_mask=labels != IGNORE_INDEX,
    )
    return token_ce_sum(out.logits, labels), out


def _all_reduce_sum(t: Tensor, dist: Dist) -> Tensor:
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


class Trainer:
    """Trains ``model`` (already placed and parallelized) with ``cfg`` on ``train_data``.

    ``val_batches``: batches for the validation loss (every process runs all of them, so FSDP and EP
    collectives line up). ``checkpointer``: a ``flanmoe.parallel.Checkpointer`` or None.
    ``log_fn(metrics, step)``: called on the main process every ``log_every`` steps.
    ``flops_per_token``: training FLOPs per (padded) position, for FLOP/s and MFU.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_data: Sampler,
        val_batches: Sequence[BatchLike] = (),
        *,
        dist: Dist | None = None,
        checkpointer: Any = None,
        log_fn: LogFn | None = None,
        flops_per_token: float | None = None,
        progress_desc: str = "train",
        keep_best: Callable[[dict[str, Tensor]], None] | None = None,
    ):
        self.model, self.cfg, self.data, self.val_batches = model, cfg, train_data, list(val_batches)
        self.dist = dist or Dist()
        self.checkpointer, self.log_fn = checkpointer, log_fn
        self.flops_per_token, self.progress_desc = flops_per_token, progress_desc
        self.keep_best = keep_best  # early stopping: called (main process) with the best full state
        self.optimizer = build_optimizer(model.parameters(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.step = 0
        self.tokens_seen = 0
        self.padded_seen = [0, 0]  # padding positions, all positions
        self.curve: list[dict[str, float]] = []
        self.last = {"train_loss": math.nan, "val_loss": None, "router": {}}  # the latest log point
        self.best = {"val_loss": math.inf, "step": None, "bad_evals": 0}  # early stopping
        self.resumed_from: int | None = None
        self._peak = self._peak_flops()

    # ------------------------------------------------------------------ checkpoints

    def _extra_state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.data.state_dict(),
            "tokens_seen": self.tokens_seen,
            "padded_seen": list(self.padded_seen),
            "curve": list(self.curve),
            "last": dict(self.last),
            "best": dict(self.best),
            "world_size": self.dist.world_size,
            "rng": rng,
        }

    def save_checkpoint(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(self.step, self.model, self.optimizer, self._extra_state())

    def maybe_resume(self) -> int | None:
        """Load the latest complete checkpoint, if any; returns its step."""
        if self.checkpointer is None:
            return None
        path = self.checkpointer.latest()
        if path is None:
            return None
        extra = self.checkpointer.load(path, self.model, self.optimizer)
        self.step = int(extra["step"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.data.load_state_dict(extra["sampler"])
        self.tokens_seen = int(extra["tokens_seen"])
        self.padded_seen = list(extra.get("padded_seen", [0, 0]))
        self.curve = list(extra.get("curve", []))
        self.last = dict(extra.get("last", self.last))
        self.best = dict(extra.get("best", self.best))
        rng = extra.get("rng")
        if rng is not None and extra.get("world_size") == self.dist.world_size:  # same layout: exact
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.resumed_from = self.step
        return self.step

    # ------------------------------------------------------------------ the loop

    def _autocast(self):
        if self.cfg.parallel.dtype == "bfloat16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _peak_flops(self) -> float | None:
        if self.dist.device.type != "cuda" or self.cfg.parallel.dtype != "bfloat16":
            return None
        name = torch.cuda.get_device_name(self.dist.device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), None)

    def train_step(self) -> dict[str, Tensor]:
        """One optimizer step; returns detached device tensors (no host sync)."""
        cfg, dist = self.cfg, self.dist
        groups = self.data.next(cfg.groups)
        mine = groups[dist.rank * cfg.grad_accum : (dist.rank + 1) * cfg.grad_accum]
        total_targets = max(sum(b.num_target_tokens for b in groups), 1)  # every process knows all groups
        self.tokens_seen += sum(b.num_target_tokens + b.num_input_tokens for b in groups)
        pads = sum(b.padded_input_tokens + b.padded_target_tokens for b in groups)  # pad positions
        self.padded_seen[0] += pads
        self.padded_seen[1] += pads + sum(b.num_input_tokens + b.num_target_tokens for b in groups)
        self.model.train()
        acc = {"ce_sum": 0.0, "aux": 0.0, "load_balance": 0.0, "z_loss": 0.0}
        stats = []
        for batch in mine:
            batch = batch.to(dist.device)
            with self._autocast():
                ce_sum, out = forward_batch(self.model, batch)
                loss = ce_sum / total_targets + out.aux_loss / len(groups)
            loss.backward()
            acc["ce_sum"] = acc["ce_sum"] + ce_sum.detach()
            acc["aux"] = acc["aux"] + out.aux_loss.detach() / len(groups)
            if out.load_balance_loss is not None:
                acc["load_balance"] = acc["load_balance"] + out.load_balance_loss.detach() / len(groups)
                acc["z_loss"] = acc["z_loss"] + out.z_loss.detach() / len(groups)
            stats.append(out.router_stats)
        from flanmoe.parallel import clip_grad_norm_

        grad_norm = clip_grad_norm_(self.model, cfg.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        vals = {k: torch.as_tensor(v, dtype=torch.float32, device=dist.device) for k, v in acc.items()}
        vals["lm_loss"] = vals.pop("ce_sum") / total_targets  # this process's share of the step's loss
        vals["grad_norm"] = grad_norm.detach().float().to(dist.device) / dist.world_size  # summed later
        return {"values": vals, "stats": stats}

    def _after_eval(self, val_loss: float | None) -> None:
        """Early stopping: keep the best model (through ``keep_best``), count evals without progress."""
        if self.cfg.early_stopping_patience is None or val_loss is None:
            return
        if val_loss < self.best["val_loss"]:
            self.best.update(val_loss=val_loss, step=self.step, bad_evals=0)
            state = state_dict_for_export(self.model)  # collective
            if self.dist.is_main and self.keep_best is not None:  # a snapshot: training goes on in place
                self.keep_best({k: v.detach().clone() for k, v in state.items()})
        else:
            self.best["bad_evals"] += 1

    @property
    def should_stop(self) -> bool:
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.best["bad_evals"] >= patience

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean target-token cross-entropy over ``val_batches`` (eval mode: eval capacity, no dropout)."""
        if not self.val_batches:
            return None
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.dist.device)
        for batch in self.val_batches:
            batch = batch.to(self.dist.device)
            with self._autocast():
                ce_sum, _ = forward_batch(self.model, batch)
            total[0] += ce_sum.double()
            total[1] += batch.num_target_tokens
        self.model.train()
        loss_sum, n = total.tolist()  # every process computed the same sum
        return loss_sum / max(n, 1)

    def fit(self) -> TrainResult:
        """Resume if a checkpoint exists, train to ``cfg.steps``, checkpoint, return the summary."""
        from flanmoe.model.router import RouterStatsAccumulator

        cfg, dist = self.cfg, self.dist
        self.maybe_resume()
        router = RouterStatsAccumulator()
        window: list[dict[str, Tensor]] = []
        throughput: dict[str, float] = {}
        progress = _Progress(cfg.steps, self.step, self.progress_desc, enabled=dist.is_main)
        t_window, tokens_window, positions_window = time.perf_counter(), self.tokens_seen, self.padded_seen[1]
        while self.step < cfg.steps and not self.should_stop:
            out = self.train_step()
            window.append(out["values"])
            for s in out["stats"]:
                router.add(s)
            last_step = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last_step:
                # the one host sync of an interval: all values of all steps, summed over processes
                names = list(window[0])
                stacked = _all_reduce_sum(
                    torch.stack([torch.stack([w[n] for w in window]) for n in names]), dist
                )
                means = dict(zip(names, stacked.mean(dim=1).tolist(), strict=True))
                window.clear()
                elapsed = max(time.perf_counter() - t_window, 1e-9)
                tok_s = (self.tokens_seen - tokens_window) / elapsed
                pos_s = (self.padded_seen[1] - positions_window) / elapsed
                t_window, tokens_window, positions_window = (
                    time.perf_counter(),
                    self.tokens_seen,
                    self.padded_seen[1],
                )
                t_side = time.perf_counter()  # validation and logging are not training time
                throughput = {"tokens_per_second": tok_s, "positions_per_second": pos_s}
                if self.flops_per_token:
                    throughput["flops_per_second"] = pos_s * self.flops_per_token
                    if self._peak:
                        throughput["mfu"] = throughput["flops_per_second"] / (self._peak * dist.world_size)
                last_router = router.reduce(lambda t: _all_reduce_sum(t, dist)) if router.count else {}
                router.reset()
                self.last.update(train_loss=means["lm_loss"], router=last_router)
                metrics = {
                    "train/loss": means["lm_loss"] + means["aux"],
                    "train/lm_loss": means["lm_loss"],
                    "train/aux_loss": means["aux"],
                    "train/grad_norm": means["grad_norm"],
                    "train/lr": self.scheduler.get_last_lr()[0],
                    "train/tokens_seen": float(self.tokens_seen),
                    "train/pad_fraction": self.pad_fraction,
                    **{f"train/{k}": v for k, v in throughput.items()},
                }
                if last_router:
                    metrics["train/load_balance_loss"] = means["load_balance"]
                    metrics["train/z_loss"] = means["z_loss"]
                    metrics.update({f"router/{k}": v for k, v in last_router.items()})
                # every point has the same keys (DVC plots refuse rows that differ): val_loss null
                # where this step did not validate
                point = {
                    "step": self.step,
                    "train_loss": means["lm_loss"],
                    "val_loss": None,
                    "lr": metrics["train/lr"],
                }
                for k in ROUTING_HEALTH:  # MoE: routing health over training (every point has them)
                    if f"moe/{k}" in last_router:
                        point[f"router_{k}"] = last_router[f"moe/{k}"]
                if self.step % cfg.eval_every == 0 or last_step:
                    self.last["val_loss"] = val_loss = self.validate()
                    self._after_eval(val_loss)
                    if val_loss is not None:
                        metrics["val/loss"] = val_loss
                        point["val_loss"] = val_loss
                self.curve.append(point)
                if dist.is_main and self.log_fn is not None:
                    self.log_fn(metrics, self.step)
                progress.update(self.step, metrics)
                t_window += time.perf_counter() - t_side
            elif self.step % cfg.eval_every == 0:
                t_side = time.perf_counter()
                self.last["val_loss"] = val_loss = self.validate()
                self._after_eval(val_loss)
                if dist.is_main and self.log_fn is not None and val_loss is not None:
                    self.log_fn({"val/loss": val_loss}, self.step)
                t_window += time.perf_counter() - t_side
            stop = self.should_stop
            if self.step % cfg.checkpoint_every == 0 or last_step or stop:
                t_side = time.perf_counter()
                self.save_checkpoint()
                t_window += time.perf_counter() - t_side
            if stop:
                break
        progress.close()
        if cfg.steps == 0 and self.last["val_loss"] is None:  # import and export only: the start's loss
            self.last["val_loss"] = self.validate()
        return TrainResult(
            steps=self.step,
            train_loss=self.last["train_loss"],
            val_loss=self.last["val_loss"],
            tokens_seen=self.tokens_seen,
            curve=list(self.curve),
            router=dict(self.last["router"]),
            pad_fraction=self.pad_fraction,
            resumed_from=self.resumed_from,
            best_step=self.best["step"],
            best_val_loss=self.best["val_loss"] if self.best["step"] is not None else None,
            stopped_early=self.step < cfg.steps,
            throughput=throughput,
        )

    @property
    def pad_fraction(self) -> float:
        return self.padded_seen[0] / self.padded_seen[1] if self.padded_seen[1] else 0.0


class _Progress:
    """tqdm on a terminal; one plain line per log point otherwise (DVC and CI logs)."""

    def __init__(self, total: int, start: int, desc: str, enabled: bool):
        self.enabled, self.desc, self.total = enabled, desc, total
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)
        self.last = start

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        loss, tok_s = metrics.get("train/lm_loss", math.nan), metrics.get("train/tokens_per_second", 0.0)
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}")
        else:
            val = f" val {metrics['val/loss']:.4f}" if "val/loss" in metrics else ""
            print(
                f"{self.desc}: step {step}/{self.total} loss {loss:.4f}{val} "
                f"lr {metrics.get('train/lr', 0):.2e} {tok_s:,.0f} tok/s",
                flush=True,
            )
        self.last = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def state_dict_for_export(model: nn.Module) -> dict[str, Tensor]:
    """Full (gathered) CPU tensors of a possibly sharded model, keyed like a plain ``FlanMoEModel``.

    Collective under FSDP/EP: every process must call it.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from flanmoe.model.pretrained import unwrapped_key

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {unwrapped_key(k): v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in sd.items()}


__all__ = ["Dist", "Trainer", "TrainResult", "forward_batch", "state_dict_for_export", "token_ce_sum"]
