"""FLAN-style task mixing: rates with a cap and a temperature, hand-computed."""

import numpy as np
import pytest

from flanmoe.train.mixture import MixtureConfig, mixing_rates, mixture_indices


def test_rates_examples_proportional_with_cap():
    rates = mixing_rates({"a": 100, "b": 300, "c": 5000}, MixtureConfig(cap=1000, temperature=1.0))
    assert rates == pytest.approx({"a": 100 / 1400, "b": 300 / 1400, "c": 1000 / 1400})


def test_temperature_flattens_rates():
    rates = mixing_rates({"a": 100, "b": 400}, MixtureConfig(cap=None, temperature=2.0))
    assert rates == pytest.approx({"a": 10 / 30, "b": 20 / 30})  # sqrt(100) : sqrt(400)


def test_mixture_rows_follow_the_rates_and_are_deterministic():
    tasks = ["a"] * 100 + ["b"] * 300 + ["c"] * 5000
    cfg = MixtureConfig(cap=1000, temperature=1.0)
    rows, stats = mixture_indices(tasks, cfg, seed=3)
    assert len(rows) == 1400 and len(set(rows.tolist())) == 1400  # no repeats when every task suffices
    picked = np.asarray(tasks)[rows]
    assert {t: int((picked == t).sum()) for t in "abc"} == {"a": 100, "b": 300, "c": 1000}
    assert stats["c"] == {"examples": 5000, "rate": pytest.approx(1000 / 1400), "rows": 1000}
    again, _ = mixture_indices(tasks, cfg, seed=3)
    other, _ = mixture_indices(tasks, cfg, seed=4)
    assert (again == rows).all() and not (other == rows).all()


def test_upweighted_small_task_repeats_rows():
    tasks = ["a"] * 10 + ["b"] * 990
    rows, stats = mixture_indices(tasks, MixtureConfig(cap=None, temperature=3.0), seed=0)
    picked = np.asarray(tasks)[rows]
    assert stats["a"]["rows"] == (picked == "a").sum() > 10  # more draws than examples: repeats
    assert len(rows) == 1000
