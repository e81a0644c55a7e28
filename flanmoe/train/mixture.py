"""Task mixing as FLAN does it: examples-proportional rates with a per-task cap, and a temperature.

A task with ``n`` examples weighs ``min(n, cap) ** (1 / temperature)``; the mixture has
``sum_t min(n_t, cap)`` rows (one "epoch" of the capped mixture), task ``t`` getting its share of them.
Temperature 1 is examples-proportional (after the cap); a larger temperature flattens the rates toward
uniform (T5's temperature-scaled mixing). Rows are drawn without replacement while a task has enough,
with replacement beyond that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from flanmoe.params_base import StrictModel


class MixtureConfig(StrictModel):
    """How the instruction tasks are mixed."""

    cap: int | None = Field(3000, ge=1)  # per-task cap on examples counted for its rate (null: none)
    temperature: float = Field(1.0, ge=1.0)  # rate ~ min(n, cap)^(1/T); 1 = examples-proportional
    replay: float = Field(0.0, ge=0.0, lt=1.0)  # share of the examples that are pretraining chunks
    # (span corruption, data/tokenized/pretrain): keeps what pretraining stored (0: none)


def mixing_rates(counts: dict[str, int], cfg: MixtureConfig) -> dict[str, float]:
    """Rate (share of the mixture) of each task from its example count; the rates sum to 1."""
    capped = {t: min(n, cfg.cap) if cfg.cap is not None else n for t, n in counts.items()}
    weights = {t: c ** (1.0 / cfg.temperature) for t, c in capped.items()}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mixture: no examples in any task")
    return {t: w / total for t, w in weights.items()}


def mixture_indices(tasks: Sequence[str], cfg: MixtureConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Row indices of the mixture over rows labelled ``tasks`` (one task name per row), sorted, and
    per-task stats ``{task: {"examples", "rate", "rows"}}``. Deterministic from ``seed``."""
    names = np.asarray(tasks)
    uniq = sorted(set(names.tolist()))
    rows_of = {t: np.flatnonzero(names == t) for t in uniq}
    counts = {t: len(r) for t, r in rows_of.items()}
    rates = mixing_rates(counts, cfg)
    size = sum(min(n, cfg.cap) if cfg.cap is not None else n for n in counts.values())
    rng = np.random.default_rng([seed, 7])  # its own stream: independent of the batch order
    picked, stats = [], {}
    for t in uniq:
        want = int(round(rates[t] * size))
        rows = rows_of[t]
        take = rng.permutation(rows)[: min(want, len(rows))]
        if want > len(rows):  # a small task upweighted by the temperature: repeat some rows
            take = np.concatenate([take, rng.choice(rows, want - len(rows), replace=True)])
        picked.append(take)
        stats[t] = {"examples": counts[t], "rate": rates[t], "rows": int(want)}
    return np.sort(np.concatenate(picked)), stats
