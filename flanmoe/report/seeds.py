"""Aggregation of replicates (``base.seeds``): one metrics dict per seed in, one dict of the same shape out.

Every estimate of the evaluate stage is a triple ``k``, ``k_lo``, ``k_hi`` (a score and its 95%
bootstrap interval over the test examples). Over ``n`` seeds the aggregate is the mean of the ``k``,
and its interval covers two sources of noise:

- **training randomness** (init, data order, exemplar draws): the spread of the seeds' values, as a
  t interval of their mean, ``t(n-1) * s / sqrt(n)``;
- **the test sample**: every seed answers the same test questions, so this error is shared by the
  seeds and does not average away; it is taken as the mean of the seeds' own half-widths (below and
  above the value, each side on its own).

The two are added in quadrature on each side::

    lo = mean - sqrt(mean(k_i - lo_i)**2 + (t * s / sqrt(n))**2)
    hi = mean + sqrt(mean(hi_i - k_i)**2 + (t * s / sqrt(n))**2)

With one seed this is that seed's interval, unchanged. Other numbers are averaged (equal across seeds
for the chance levels the table reads). A count (an integer in every seed) stays an integer: the
seeds' mean count, rounded, so a count that differs between seeds (the pairs with listed options in
each seed's own validation split) reads as pairs per seed, not as 519.875. Anything else is taken
from the first seed.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping, Sequence

# two-sided 95% Student t quantiles t(0.975, df), df = 1..30; beyond, the normal 1.96
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def combine(
    values: Sequence[float], los: Sequence[float], his: Sequence[float]
) -> tuple[float, float, float]:
    """(mean, lo, hi) of one estimate over seeds (module doc)."""
    n = len(values)
    mean = statistics.fmean(values)
    seed_half = t975(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else 0.0
    below = statistics.fmean(v - lo for v, lo in zip(values, los, strict=True))
    above = statistics.fmean(hi - v for v, hi in zip(values, his, strict=True))
    return mean, mean - math.hypot(below, seed_half), mean + math.hypot(above, seed_half)


def aggregate(dicts: Sequence[Mapping]) -> dict:
    """The seeds' metrics dicts (same shape) as one (module doc). A key missing from some seed keeps
    the seeds that have it."""
    if not dicts:
        raise ValueError("no metrics to aggregate")
    if len(dicts) == 1:  # exactly that seed's numbers
        return copy.deepcopy(dict(dicts[0]))
    first = dicts[0]
    out: dict = {}
    for key, value in first.items():
        if isinstance(key, str) and (key.endswith("_lo") or key.endswith("_hi")) and key[:-3] in first:
            continue  # written with its estimate
        present = [d[key] for d in dicts if key in d]
        if isinstance(value, Mapping):
            out[key] = aggregate([v for v in present if isinstance(v, Mapping)])
        elif _number(value) and f"{key}_lo" in first and f"{key}_hi" in first:
            rows = [d for d in dicts if all(_number(d.get(k)) for k in (key, f"{key}_lo", f"{key}_hi"))]
            mean, lo, hi = combine(
                [d[key] for d in rows], [d[f"{key}_lo"] for d in rows], [d[f"{key}_hi"] for d in rows]
            )
            out[key], out[f"{key}_lo"], out[f"{key}_hi"] = mean, lo, hi
        elif _number(value) and all(_number(v) for v in present):
            out[key] = statistics.fmean(present)
            if all(isinstance(v, int) for v in present):  # a count stays a count (module doc)
                out[key] = round(out[key])
        else:
            out[key] = value
    return out


def by_seed(per_seed: Mapping[int, object] | Sequence[object]) -> dict:
    """One model's per-seed values as ``{seed: value}``: a mapping as it is (the pipeline's, keyed by
    seed; an arch of ``base.extra_archs`` has more seeds than the others), a list by position (every
    model the same seeds in the same order)."""
    return dict(per_seed) if isinstance(per_seed, Mapping) else dict(enumerate(per_seed))


def shared_seeds(*models: Mapping[int, object]) -> list:
    """The seeds every one of ``models`` (``by_seed`` dicts) has, in the first one's order: what a
    paired comparison of them runs over."""
    return [s for s in models[0] if all(s in m for m in models[1:])] if models else []


def mean_curve(runs: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Training-curve rows (``plots/<stage>/s<seed>/<name>.json``) of several seeds as one: a row per
    step that every seed logged, each number the mean over the seeds with the seeds' range beside it
    (``<key>_min``, ``<key>_max``); a number some seed left null (``val_loss`` off the validation
    steps) is null. One seed gives its rows unchanged."""
    if not runs:
        raise ValueError("no curves to aggregate")
    if len(runs) == 1:
        return [dict(r) for r in runs[0]]
    others = [{r["step"]: r for r in rows} for rows in runs[1:]]
    out = []
    for first in runs[0]:
        step = first["step"]
        if not all(step in b for b in others):
            continue
        rows = [first, *(b[step] for b in others)]
        row: dict = {"step": step}
        for key, value in first.items():
            if key == "step":
                continue
            values = [r.get(key) for r in rows]
            if all(_number(v) for v in values):
                row[key] = statistics.fmean(values)
                row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
            else:
                row[key] = None if value is None or _number(value) else value
        out.append(row)
    return out
