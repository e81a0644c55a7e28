"""Closed-book QA over the generated world (category ``world_knowledge``): one family per trained
relation and per person relation. Person families ask about IT people only (``World.askable``):
held-out people's facts never enter the mixture."""

from __future__ import annotations

import random

from flanmoe.data.embedded.facts import Relation
from flanmoe.data.embedded.families.base import Example, Family, GenContext, make_options
from flanmoe.data.embedded.people import PERSON_RELATIONS
from flanmoe.data.embedded.world import TRAINED_RELATIONS

CATEGORY = "world_knowledge"


def _relation_family(rel: Relation) -> Family:
    def gen(rng: random.Random, ctx: GenContext) -> Example:
        ent = rng.choice(ctx.world.askable(rel.kind))
        answer = ent.attrs[rel.attr]
        return Example(
            {"s": ent.name}, answer, make_options(rng, answer, ctx.world.values(rel.kind, rel.attr))
        )

    plain = rel.statements[0].replace("{o}", "{answer}")
    return Family(f"{rel.kind}_{rel.attr}", CATEGORY, rel.questions, plain, gen)


def _capital_to_country(rng: random.Random, ctx: GenContext) -> Example:
    country = rng.choice(ctx.world.of("country"))
    pool = [c.name for c in ctx.world.of("country")]
    return Example({"s": country.attrs["capital"]}, country.name, make_options(rng, country.name, pool))


PERSON_FAMILIES = frozenset(f"{r.kind}_{r.attr}" for r in PERSON_RELATIONS)
FAMILIES: list[Family] = [_relation_family(r) for r in TRAINED_RELATIONS + PERSON_RELATIONS] + [
    Family(
        "capital_to_country",
        CATEGORY,
        (
            "{s} is the capital of which country?",
            "Which country has {s} as its capital?",
            "Of what country is {s} the capital?",
        ),
        "{s} is the capital of {answer}.",
        _capital_to_country,
    )
]
