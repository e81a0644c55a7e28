"""Point estimates with 95% intervals, differences of them, the verdict a difference gives, and how an
estimate is printed (normalized points, raw scores).

Every score of the evaluate stage comes with a percentile-bootstrap CI computed per model. A gain
(instruction-tuned minus pretrained-only, MoE minus dense, ...) needs an interval too, and the two
bootstraps were not paired, so the gain's interval is built from the two intervals by **MOVER**
(method of variance estimates recovery; Newcombe 1998, Zou & Donner 2008), which assumes the two
estimates independent and keeps each interval's own asymmetry::

    d  = a - b
    lo = d - sqrt((a - a.lo)**2 + (b.hi - b)**2)
    hi = d + sqrt((a.hi - a)**2 + (b - b.lo)**2)

For symmetric intervals this is the familiar "half-widths added in quadrature". Two models scored on
the same test questions are positively correlated (the hard questions are hard for both), which
makes the variance of their difference *smaller* than under independence: these intervals are
conservative (wider than a paired bootstrap's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
WITHIN_NOISE = "within noise"
NOT_MEASURED = "not measured in this run"
VERDICT_CODE = {HOLDS: 1, WITHIN_NOISE: 0, DOES_NOT_HOLD: -1}  # numeric, for MLflow's compare view


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval ``[lo, hi]`` (``lo <= value <= hi``)."""

    value: float
    lo: float
    hi: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {
            "value": round(self.value, digits),
            "lo": round(self.lo, digits),
            "hi": round(self.hi, digits),
        }


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` with its MOVER interval (``a`` and ``b`` taken as independent; see the module doc)."""
    d = a.value - b.value
    lo = d - math.hypot(a.value - a.lo, b.hi - b.value)
    hi = d + math.hypot(a.hi - a.value, b.value - b.lo)
    return Estimate(d, lo, hi)


def verdict(diff: Estimate) -> str:
    """``holds`` if the interval of a difference lies above 0, ``does not hold`` if below 0, else
    ``within noise``."""
    if diff.lo > 0:
        return HOLDS
    if diff.hi < 0:
        return DOES_NOT_HOLD
    return WITHIN_NOISE


def combine_verdicts(verdicts: list[str]) -> str:
    """A claim made for every case: it holds if every case holds, does not hold if any case does not,
    else it is within noise. No case at all: not measured."""
    if not verdicts:
        return NOT_MEASURED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == DOES_NOT_HOLD for v in verdicts):
        return DOES_NOT_HOLD
    return WITHIN_NOISE


def fmt_points(e: Estimate, sign: bool = False) -> str:
    """Normalized points: ``-10.4 [-13.5, -7.0]`` (``sign``: ``+5.3 [+1.0, +9.8]``)."""
    f = "{:+.1f}" if sign else "{:.1f}"
    return f"{f.format(e.value)} [{f.format(e.lo)}, {f.format(e.hi)}]"


def fmt_score(e: Estimate, sign: bool = False) -> str:
    """A raw score: ``0.108 [0.083, 0.135]``."""
    f = "{:+.3f}" if sign else "{:.3f}"
    return f"{f.format(e.value)} [{f.format(e.lo)}, {f.format(e.hi)}]"
