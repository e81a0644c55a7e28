"""Scoring arithmetic: BBH answer normalisation, exact match, the paper's normalized score, best-constant
baselines and percentile-bootstrap confidence intervals.

Everything here is plain Python / numpy on per-example results (1.0 correct, 0.0 wrong), so the
arithmetic is testable by hand.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

_LETTER_TARGET = re.compile(r"^\(([A-Z])\)$")
_LETTER_PRED = re.compile(r"^\(?([A-Z])\)?(?:$|[\s.:,)])")


def normalize_answer(prediction: str, target: str) -> str:
    """``prediction`` as BBH's scorer compares it with ``target``.

    Whitespace is stripped and only the first line kept (a model that goes on after its answer is
    not penalised for it). When the target is an option letter ``(A)``, a prediction that starts
    with ``(A)``, ``A)``, ``A.`` or a lone ``A`` becomes ``(A)``; anything else is compared as is.
    A trailing period is dropped unless the target has one.
    """
    pred = prediction.strip().split("\n", 1)[0].strip()
    if _LETTER_TARGET.match(target.strip()):
        m = _LETTER_PRED.match(pred)
        return f"({m.group(1)})" if m else pred
    if pred.endswith(".") and not target.strip().endswith("."):
        pred = pred[:-1].rstrip()
    return pred


def exact_match(prediction: str, target: str) -> bool:
    """BBH exact match: the normalised prediction equals the stripped target."""
    return normalize_answer(prediction, target) == target.strip()


def normalized_score(score: float, chance: float) -> float:
    """The paper's normalized score of an accuracy ``score`` in [0, 1]: chance -> 0, perfect -> 100
    (below chance is negative)."""
    if not 0 <= chance < 1:
        raise ValueError(f"chance: {chance} must be in [0, 1)")
    return 100.0 * (score - chance) / (1.0 - chance)


def best_constant(targets: Sequence[str]) -> tuple[str, float]:
    """The most frequent target and the accuracy of always answering it (a baseline to report next
    to every exact-match score: on small sets it can be far above the uniform chance level)."""
    if not targets:
        return "", 0.0
    value, count = Counter(t.strip() for t in targets).most_common(1)[0]
    return value, count / len(targets)


def _arrays(groups: Mapping[str, Sequence[float]] | Sequence[float]) -> list[np.ndarray]:
    values = groups.values() if isinstance(groups, Mapping) else [groups]
    return [a for a in (np.asarray(v, dtype=np.float64) for v in values) if a.size]


def _mean(arrays: list[np.ndarray]) -> float:
    """The mean of each array's mean (one array: its mean)."""
    return float(np.mean([a.mean() for a in arrays]))


def bootstrap_means(
    groups: Mapping[str, Sequence[float]] | Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> np.ndarray:
    """``n_resamples`` bootstrap replicates of the mean of ``groups`` (see ``bootstrap_ci``)."""
    arrays = _arrays(groups)
    if not arrays:
        raise ValueError("bootstrap: no values")
    rng = np.random.default_rng(seed)
    stats = np.zeros(n_resamples)
    for a in arrays:
        idx = rng.integers(0, a.size, size=(n_resamples, a.size))
        stats += a[idx].mean(axis=1)
    return stats / len(arrays)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``replicates``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence} must be in (0, 1)")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    groups: Mapping[str, Sequence[float]] | Sequence[float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile-bootstrap CI of a mean.

    ``groups`` is a list of per-example values (the mean over examples), or ``{task: values}`` (the
    mean over tasks of each task's mean, the way a benchmark averages its tasks; every task is
    resampled within itself). ``n_resamples`` 0 gives ``(mean, mean, mean)``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: {confidence} must be in (0, 1)")
    arrays = _arrays(groups)
    if not arrays:
        return float("nan"), float("nan"), float("nan")
    point = _mean(arrays)
    if n_resamples <= 0:
        return point, point, point
    return (point, *percentile_interval(bootstrap_means(groups, n_resamples, seed), confidence))


def normalized_average(
    suites: Mapping[str, tuple[Mapping[str, Sequence[float]] | Sequence[float], float]],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) of the paper's normalized average: the mean over benchmarks of each one's
    normalized score. ``suites`` maps a benchmark to (its values as ``bootstrap_ci`` takes them, its
    chance level); each benchmark is resampled independently."""
    if not suites:
        raise ValueError("normalized_average: no suites")
    point = float(np.mean([normalized_score(_mean(_arrays(g)), c) for g, c in suites.values()]))
    if n_resamples <= 0:
        return point, point, point
    reps = np.mean(
        [
            100.0 * (bootstrap_means(g, n_resamples, seed + i) - c) / (1.0 - c)
            for i, (g, c) in enumerate(suites.values())
        ],
        axis=0,
    )
    return (point, *percentile_interval(reps, confidence))


__all__ = [
    "best_constant",
    "bootstrap_ci",
    "bootstrap_means",
    "exact_match",
    "normalize_answer",
    "normalized_average",
    "normalized_score",
    "percentile_interval",
]
