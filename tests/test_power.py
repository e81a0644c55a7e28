"""Paired differences, seed intervals and power (flanmoe/report/power.py)."""

from __future__ import annotations

import numpy as np
import pytest

from flanmoe.eval.metrics import bootstrap_ci
from flanmoe.report.power import (
    minimum_detectable_effect,
    paired_difference,
    seed_interval,
    seeds_needed,
    std_error_of,
)
from flanmoe.report.stats import Estimate, difference


def _correlated(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two models right on the same easy questions; b also right on 5% more of them."""
    rng = np.random.default_rng(seed)
    easy = rng.random(n) < 0.5
    a = easy.astype(float)
    b = (easy | (rng.random(n) < 0.05)).astype(float)
    return a, b


def test_paired_interval_is_narrower_than_independent_intervals_of_correlated_models():
    a, b = _correlated()
    paired = paired_difference((b, a), n_resamples=2000, seed=1)
    independent = difference(
        Estimate(*bootstrap_ci(b, 2000, seed=1)), Estimate(*bootstrap_ci(a, 2000, seed=2))
    )
    assert paired.value == pytest.approx(b.mean() - a.mean())
    assert paired.lo > 0  # the paired test sees the 5% gain ...
    assert independent.lo < 0  # ... that independent intervals leave within noise
    assert (paired.hi - paired.lo) < 0.5 * (independent.hi - independent.lo)


def test_identical_models_differ_by_exactly_zero_and_tasks_are_averaged():
    a, b = _correlated()
    assert paired_difference((a, a), n_resamples=200) == Estimate(0.0, 0.0, 0.0)
    by_task = paired_difference({"x": ([1.0, 1.0], [0.0, 0.0]), "y": ([0.0] * 10, [0.0] * 10)}, 200)
    assert by_task == Estimate(0.5, 0.5, 0.5)  # the mean of task means, not of questions
    with pytest.raises(ValueError):
        paired_difference(([1.0, 0.0], [1.0]))
    with pytest.raises(ValueError):
        paired_difference(([], []))


def test_seed_interval_is_a_t_interval():
    est = seed_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(.975, 2) = 4.303
    assert est.value == 2.0
    assert est.hi - est.value == pytest.approx(4.3027 / 3**0.5, rel=1e-4)
    with pytest.raises(ValueError):
        seed_interval([1.0])


def test_power_figures():
    assert minimum_detectable_effect(1.0) == pytest.approx(1.95996 + 0.84162, rel=1e-4)
    assert std_error_of(Estimate(0.0, -1.96, 1.96)) == pytest.approx(1.0, rel=1e-3)
    # sd .05 between seeds, +-.03: t(.975, 13) x .05 / sqrt(14) = .0289, while 13 seeds give .0302
    assert seeds_needed(0.05, 0.03) == 14
    assert seeds_needed(0.01, 0.5) == 2
    with pytest.raises(ValueError):
        seeds_needed(0.05, 0.0)
