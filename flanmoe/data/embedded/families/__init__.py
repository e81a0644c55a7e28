"""The instruction families of the FLAN-like mixture, in a fixed order, grouped by category."""

from __future__ import annotations

from flanmoe.data.embedded.families import (
    arithmetic,
    classification,
    knowledge,
    reading,
    sequences,
    strings,
    translation,
)
from flanmoe.data.embedded.families.base import Example, Family, GenContext

FAMILIES: tuple[Family, ...] = tuple(
    knowledge.FAMILIES
    + arithmetic.FAMILIES
    + strings.FAMILIES
    + classification.FAMILIES
    + sequences.FAMILIES
    + reading.FAMILIES
    + translation.FAMILIES
)
assert len({f.name for f in FAMILIES}) == len(FAMILIES), "family names must be unique"

__all__ = ["FAMILIES", "Example", "Family", "GenContext"]
