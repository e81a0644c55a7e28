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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from flanmoe.model.loss import IGNORE_INDEX, token_cross_entropy
from flanmoe.model.transformer import shift_right
from flanmoe.train.checkpointing import CheckpointPolicy
from flanmoe.train.config import TrainConfig
from flanmoe.train.early_stopping import EarlyStopping
from flanmoe.train.meter import IntervalMeter, LogPoint, peak_flops
from flanmoe.train.optim import build_optimizer, build_scheduler

LogFn = Callable[[dict[str, float], int], None]


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


class Trainer:
    """Trains ``model`` (already placed and parallelized) with ``cfg`` on ``train_data``.

    ``val_batches``: batches for the validation loss (every process runs all of them, so FSDP and EP
    collectives line up). ``checkpointer``: a ``flanmoe.parallel.Checkpointer`` or None.
    ``log_fn(metrics, step)``: called on the main process every ``log_every`` steps.
    ``flops_per_token``: training FLOPs per (padded) position, for FLOP/s and MFU.
    ``keep_best(state)``: early stopping's keeper of the best model (main process; a full CPU copy).

    The loop's parts: ``meter`` (the log interval, throughput, the curve: ``flanmoe.train.meter``),
    ``early_stopping`` and ``checkpoints`` (when to save, what is saved: ``flanmoe.train.checkpointing``).
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
        self.resumed_from: int | None = None
        peak = peak_flops(self.dist.device, cfg.parallel.dtype)
        self.meter = IntervalMeter(self.dist.world_size, flops_per_token, peak)
        self.early_stopping = EarlyStopping(
            cfg.early_stopping_patience,
            snapshot=lambda: state_dict_for_export(self.model),
            keep_best=keep_best,
            is_main=self.dist.is_main,
        )
        self.checkpoints = CheckpointPolicy(
            checkpointer,
            cfg.checkpoint_every,
            model=model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            sampler=train_data,
            meter=self.meter,
            early_stopping=self.early_stopping,
            world_size=self.dist.world_size,
        )

    def save_checkpoint(self) -> None:
        self.checkpoints.save(self.step)

    def maybe_resume(self) -> int | None:
        """Load the latest complete checkpoint, if any; returns its step."""
        step = self.checkpoints.resume()
        if step is not None:
            self.step = self.resumed_from = step
        return step

    def _autocast(self):
        if self.cfg.parallel.dtype == "bfloat16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, Tensor]:
        """One optimizer step; returns detached device tensors (no host sync)."""
        cfg, dist = self.cfg, self.dist
        groups = self.data.next(cfg.groups)
        mine = groups[dist.rank * cfg.grad_accum : (dist.rank + 1) * cfg.grad_accum]
        total_targets = max(sum(b.num_target_tokens for b in groups), 1)  # every process knows all groups
        self.meter.count(groups)
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

    @property
    def should_stop(self) -> bool:
        return self.early_stopping.should_stop

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
        """Resume if a checkpoint exists, train to ``cfg.steps``, checkpoint, return the summary.

        Per step: train -> meter (every ``log_every`` steps and at the end: reduce the interval) ->
        eval (every ``eval_every`` steps and at the end; early stopping decides) -> log -> checkpoint.
        """
        cfg, meter = self.cfg, self.meter
        self.maybe_resume()
        progress = _Progress(cfg.steps, self.step, self.progress_desc, enabled=self.dist.is_main)
        meter.start()
        while self.step < cfg.steps and not self.should_stop:
            meter.add(**self.train_step())
            final = self.step == cfg.steps
            point = None
            if self.step % cfg.log_every == 0 or final:
                point = meter.close(self.step, self.scheduler.get_last_lr()[0])
            with meter.paused():  # validation, logging and checkpoints are not training time
                if self.step % cfg.eval_every == 0 or final:
                    self.evaluate(point)
                if point is not None:
                    meter.record(point)
                    self._log(point.metrics)
                    progress.update(self.step, point.metrics)
                if self.checkpoints.due(self.step, final=final or self.should_stop):
                    self.save_checkpoint()
        progress.close()
        if cfg.steps == 0 and meter.val_loss is None:  # import and export only: the start's loss
            meter.val_loss = self.validate()
        return self._result()

    def evaluate(self, point: LogPoint | None) -> None:
        """Validate at this step, let early stopping decide, and log the loss: with the log point
        ``point`` if this step has one, else alone."""
        val_loss = self.meter.val_loss = self.validate()
        self.early_stopping.update(val_loss, self.step)
        if val_loss is None:
            return
        if point is not None:
            point.add_val_loss(val_loss)
        else:
            self._log({"val/loss": val_loss})

    def _log(self, metrics: dict[str, float]) -> None:
        if self.dist.is_main and self.log_fn is not None:
            self.log_fn(metrics, self.step)

    def _result(self) -> TrainResult:
        meter, best = self.meter, self.early_stopping
        return TrainResult(
            steps=self.step,
            train_loss=meter.train_loss,
            val_loss=meter.val_loss,
            tokens_seen=meter.tokens_seen,
            curve=list(meter.curve),
            router=dict(meter.router),
            pad_fraction=meter.pad_fraction,
            resumed_from=self.resumed_from,
            best_step=best.best_step,
            best_val_loss=best.best_val_loss if best.best_step is not None else None,
            stopped_early=self.step < self.cfg.steps,
            throughput=dict(meter.throughput),
        )

    @property
    def pad_fraction(self) -> float:
        return self.meter.pad_fraction


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


__all__ = [
    "Dist",
    "Trainer",
    "TrainResult",
    "forward_batch",
    "state_dict_for_export",
    "token_ce_sum",
]
