"""Paired comparisons and statistical power: what the study needs to say "MoE beats dense" or "no
difference larger than d" with a known error rate.

Two models scored on the same questions are correlated (the hard questions are hard for both), so
their difference is estimated **paired**: within one seed, a bootstrap that resamples questions
jointly for both models (``paired_difference``); across seeds, a t-interval of the per-seed paired
differences (``seed_interval``). Next to a verdict the report can then print the smallest effect the
run could have detected (``minimum_detectable_effect``, 80% power, two-sided alpha .05) and how many
seeds an interval of a given half-width would take at the measured seed-to-seed spread
(``seeds_needed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from flanmoe.report.stats import Estimate

Pair = tuple[Sequence[float], Sequence[float]]


def _pairs(questions: Mapping[str, Pair] | Pair) -> list[np.ndarray]:
    """Per group a ``[2, n]`` array (model a, model b), empty groups dropped."""
    groups = questions.values() if isinstance(questions, Mapping) else [questions]
    out = []
    for a, b in groups:
        arr = np.asarray([a, b], dtype=np.float64)
        if arr.shape[0] != 2 or arr.ndim != 2:
            raise ValueError("paired scores: two sequences of equal length per group")
        if arr.shape[1]:
            out.append(arr)
    return out


def paired_difference(
    questions: Mapping[str, Pair] | Pair,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
) -> Estimate:
    """Mean score of model a minus model b on the same questions, with a percentile interval from
    resampling questions jointly for both models.

    ``questions``: ``(a_scores, b_scores)`` per question in the same order, or ``{task: (a, b)}`` (the
    mean over tasks of each task's mean difference; each task resampled within itself, as
    ``flanmoe.eval.metrics.bootstrap_ci`` averages a benchmark's tasks). ``weights`` (``{task: w}``,
    the mapping form only): the sum over tasks of ``w`` x the task's mean difference instead of the
    plain mean (the normalized average of ``flanmoe.report.heldout_pairs``); the resampling is the same.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence} must be in (0, 1)")
    if weights is not None:
        if not isinstance(questions, Mapping) or set(weights) != set(questions):
            raise ValueError("paired_difference: weights need {task: (a, b)} and one weight per task")
        questions = {k: v for k, v in questions.items() if len(v[0])}
        w = np.asarray([weights[k] for k in questions], dtype=np.float64)
    diffs = [arr[0] - arr[1] for arr in _pairs(questions)]
    if not diffs:
        raise ValueError("paired_difference: no questions")
    if weights is None:
        w = np.full(len(diffs), 1.0 / len(diffs))
    point = (
        float(np.mean([d.mean() for d in diffs]))
        if weights is None
        else float(sum(wi * d.mean() for wi, d in zip(w, diffs, strict=True)))
    )
    if n_resamples <= 0:
        return Estimate(point, point, point)
    rng = np.random.default_rng(seed)
    stats = np.zeros(n_resamples)
    for wi, d in zip(w, diffs, strict=True):
        resampled = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
        stats += resampled if weights is None else wi * resampled
    if weights is None:
        stats /= len(diffs)  # as before weights existed: the same floating-point operations
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return Estimate(point, min(float(lo), point), max(float(hi), point))


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # imported here: only the report's power figures need it

    return float(t.ppf(p, df))


def seed_interval(differences: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The mean of per-seed paired differences with its t-interval (``n - 1`` degrees of freedom)."""
    n = len(differences)
    if n < 2:
        raise ValueError(f"seed_interval: needs two or more seeds, got {n}")
    mean, sd = float(np.mean(differences)), float(np.std(differences, ddof=1))
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half)


def paired_over_seeds(
    per_seed: Sequence[Mapping[str, Pair] | Pair],
    seed: int = 0,
    weights: Sequence[Mapping[str, float] | None] | None = None,
) -> Estimate:
    """The paired difference of one seed's questions (``paired_difference``, resampled with
    ``seed``), or over several seeds the t-interval of each seed's paired point (``seed_interval``):
    the seed-to-seed spread, not the question count, limits power there. ``weights``: per seed, as
    ``paired_difference`` takes them."""
    ws = list(weights) if weights is not None else [None] * len(per_seed)
    if len(per_seed) == 1:
        return paired_difference(per_seed[0], seed=seed, weights=ws[0])
    return seed_interval(
        [paired_difference(q, n_resamples=0, weights=w).value for q, w in zip(per_seed, ws, strict=True)]
    )


def minimum_detectable_effect(
    std_error: float, alpha: float = 0.05, power: float = 0.8, df: int | None = None
) -> float:
    """The smallest true difference a two-sided test at ``alpha`` detects with probability ``power``,
    for an estimate with standard error ``std_error``: (z_(1-alpha/2) + z_power) se, or with ``df``
    (a t-interval over seeds, ``n - 1``) Student's t quantiles in place of the normal ones."""
    if df is not None:
        return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * std_error
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(power)) * std_error


def std_error_of(estimate: Estimate, confidence: float = 0.95) -> float:
    """The standard error a (roughly symmetric) ``confidence`` interval implies: half-width / z."""
    from statistics import NormalDist

    return (estimate.hi - estimate.lo) / 2 / NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def seeds_needed(seed_sd: float, half_width: float, confidence: float = 0.95, max_seeds: int = 10_000) -> int:
    """The fewest seeds (>= 2) whose t-interval of a mean difference is at most ``half_width`` wide on
    each side, when the per-seed differences spread with standard deviation ``seed_sd``."""
    if half_width <= 0:
        raise ValueError(f"half_width: {half_width} must be > 0")
    for n in range(2, max_seeds + 1):
        if t_quantile(1 - (1 - confidence) / 2, n - 1) * seed_sd / math.sqrt(n) <= half_width:
            return n
    raise ValueError(f"seeds_needed: more than {max_seeds} seeds for half-width {half_width} at sd {seed_sd}")


__all__ = [
    "minimum_detectable_effect",
    "paired_difference",
    "paired_over_seeds",
    "seed_interval",
    "seeds_needed",
    "std_error_of",
    "t_quantile",
]
