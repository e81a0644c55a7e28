"""What a fact of the generated world is: an ``Entity`` with attributes, a ``Relation`` (how to state and
ask one attribute), and ``state`` / ``state_span``, which render one fact as a sentence."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from flanmoe.data.embedded import vocab


@dataclass
class Entity:
    """One thing in the world: ``kind`` (country, city, ...), a unique ``name`` and ``attrs``."""

    kind: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Relation:
    """An attribute of one kind, how to state it and how to ask it.

    Templates use ``{s}`` (the entity) and ``{o}`` (the value). ``subject`` is the held-out MMLU
    subject that asks about it, or ``None`` when instruction families ask about it.
    """

    kind: str
    attr: str
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    subject: str | None = None


def state(rel: Relation, ent: Entity, rng: random.Random, lead: str = "") -> str:
    """One sentence stating ``rel`` of ``ent`` in a random phrasing, after the lead-in ``lead``."""
    t = rng.choice(rel.statements)
    if lead and not t.startswith("{"):  # 'Records show that the ...', but names keep their capital
        t = t[0].lower() + t[1:]
    s = lead + t.format(s=ent.name, o=ent.attrs[rel.attr])
    return vocab.fix_articles(s[0].upper() + s[1:])


def state_span(rel: Relation, ent: Entity, rng: random.Random, lead: str = "") -> tuple[str, tuple[int, int]]:
    """``state``, and where the value lies in the sentence: ``(start, end)`` character offsets."""
    sentence = state(rel, ent, rng, lead)
    return sentence, value_span(sentence, ent.name, ent.attrs[rel.attr])


def value_span(sentence: str, name: str, value: str) -> tuple[int, int]:
    """Offsets of ``value`` as a whole word in ``sentence`` (any case), outside every mention of ``name``."""
    names = [(m.start(), m.end()) for m in re.finditer(re.escape(name), sentence, re.IGNORECASE)]
    for m in re.finditer(rf"\b{re.escape(value)}\b", sentence, re.IGNORECASE):
        if not any(a < m.end() and m.start() < b for a, b in names):
            return m.start(), m.end()
    raise ValueError(f"value {value!r} not in {sentence!r}")  # every template holds {o}: a template bug
