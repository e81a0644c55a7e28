"""Optimizers (AdamW, T5's Adafactor) and learning-rate schedules (linear warmup, then constant,
inverse square root or cosine), both built from a ``TrainConfig``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from flanmoe.train.config import TrainConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Adafactor over the trainable ``params`` (frozen ones get no optimizer state)."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adafactor":  # torch's Adafactor: factored second moments, no first moment
        return torch.optim.Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # foreach: one fused-per-group update; fused=True rejects DTensors on CPU, so stay generic
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, foreach=True
    )


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based; the update that step makes)."""
    warm = cfg.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "inverse_sqrt":  # T5: 1/sqrt(step), continuous with the warmup's end
        return math.sqrt(max(warm, 1) / (step + 1))
    span = max(cfg.steps - warm, 1)  # cosine from lr down to min_lr_ratio * lr at the last step
    progress = min((step - warm) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying ``lr_factor``; call ``step()`` once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
