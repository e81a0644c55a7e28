"""A small generated world: countries, cities, people, animals and invented elements with attributes.

Its facts are stated in the pretraining corpus (``corpus.py``). People (``people.py``) are split into
IT people, whom instruction families ask about, and held-out people, whom only the MMLU-style suite
asks about: the main test of knowledge transfer (held-out *entities*). Of the other kinds, some
relations are asked by instruction families (``TRAINED_RELATIONS``), the others only by the
MMLU-style suite (``Relation.subject``): a secondary probe of transfer to held-out *relations*, which
no model of this size passes (docs/calibration.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.facts import Entity, Relation
from flanmoe.data.embedded.people import People, make_people, person_pools

RELATIONS: tuple[Relation, ...] = (
    # --- trained: the instruction mixture asks these (category world_knowledge) ---
    Relation(
        "country",
        "capital",
        (
            "The capital of {s} is {o}.",
            "{o} is the capital city of {s}.",
            "{s} is governed from its capital, {o}.",
        ),
        (
            "What is the capital of {s}?",
            "Name the capital city of {s}.",
            "{s} has which city as its capital?",
        ),
    ),
    Relation(
        "country",
        "continent",
        (
            "{s} is a country in {o}.",
            "{s} lies on the continent of {o}.",
            "The country of {s} is part of {o}.",
        ),
        ("On which continent is {s}?", "Which continent is {s} part of?", "{s} lies on what continent?"),
    ),
    Relation(
        "city",
        "country",
        ("{s} is a city in {o}.", "The city of {s} lies in {o}.", "{s} belongs to {o}."),
        (
            "In which country is the city of {s}?",
            "{s} is a city in which country?",
            "Which country is {s} in?",
        ),
    ),
    Relation(
        "city",
        "river",
        (
            "{s} lies on the river {o}.",
            "The river {o} flows through {s}.",
            "{s} was built on the banks of the {o}.",
        ),
        ("Which river flows through {s}?", "On what river does {s} lie?", "Name the river of {s}."),
    ),
    Relation(
        "animal",
        "diet",
        ("The {s} is a {o}.", "A {s} is a {o} by diet.", "Zoologists class the {s} as a {o}."),
        (
            "Is the {s} a herbivore, carnivore or omnivore?",
            "What kind of eater is the {s}?",
            "What is the diet class of the {s}?",
        ),
    ),
    Relation(
        "element",
        "symbol",
        (
            "The chemical symbol of {s} is {o}.",
            "{s} is written {o} in formulas.",
            "Chemists abbreviate {s} as {o}.",
        ),
        (
            "What is the symbol of {s}?",
            "How do chemists abbreviate {s}?",
            "Give the chemical symbol for {s}.",
        ),
    ),
    # --- held out: only the MMLU-style suite asks these; the corpus states them ---
    Relation(
        "country",
        "language",
        ("People in {s} speak {o}.", "The language of {s} is {o}.", "{o} is spoken throughout {s}."),
        ("Which language is spoken in {s}?", "What do people in {s} speak?"),
        "world_geography",
    ),
    Relation(
        "country",
        "currency",
        ("The currency of {s} is the {o}.", "In {s} people pay with the {o}.", "Shops in {s} take the {o}."),
        ("What is the currency of {s}?", "Which money is used in {s}?"),
        "world_geography",
    ),
    Relation(
        "city",
        "product",
        (
            "{s} is famous for its {o}.",
            "The city of {s} is known for {o}.",
            "Merchants of {s} sell fine {o}.",
        ),
        ("What is the city of {s} famous for?", "What goods is {s} known for?"),
        "world_geography",
    ),
    Relation(
        "animal",
        "habitat",
        ("The {s} lives in the {o}.", "You can find the {s} in the {o}.", "The home of the {s} is the {o}."),
        ("Where does the {s} live?", "What is the habitat of the {s}?"),
        "zoology",
    ),
    Relation(
        "animal",
        "color",
        ("The {s} is {o}.", "The fur of the {s} is {o}.", "A {s} has a {o} coat."),
        ("What color is the {s}?", "Which color is the coat of the {s}?"),
        "zoology",
    ),
    Relation(
        "animal",
        "legs",
        ("The {s} has {o} legs.", "A {s} walks on {o} legs.", "Every {s} has {o} legs."),
        ("How many legs does the {s} have?", "On how many legs does a {s} walk?"),
        "zoology",
    ),
    Relation(
        "element",
        "color",
        ("Pure {s} is {o}.", "{s} has a {o} color.", "A sample of {s} looks {o}."),
        ("What color is pure {s}?", "Which color does a sample of {s} have?"),
        "chemistry",
    ),
    Relation(
        "element",
        "state",
        (
            "{s} is a {o} at room temperature.",
            "At room temperature {s} is a {o}.",
            "{s} stays a {o} in a warm room.",
        ),
        ("In which state is {s} at room temperature?", "At room temperature, {s} is a what?"),
        "chemistry",
    ),
    Relation(
        "element",
        "discoverer",
        ("{s} was discovered by {o}.", "{o} discovered {s}.", "The element {s} was first found by {o}."),
        ("Who discovered {s}?", "Which person first found the element {s}?"),
        "chemistry",
    ),
)
# asked by the instruction mixture: these, and every person relation (of IT people only)
TRAINED_RELATIONS = tuple(r for r in RELATIONS if r.subject is None)
HELDOUT_RELATIONS = tuple(r for r in RELATIONS if r.subject is not None)
KINDS = ("country", "city", "person", "animal", "element")


@dataclass
class World:
    """All entities by kind, in generation order (stable), and the value pools of their attributes."""

    entities: dict[str, list[Entity]]
    pools: dict[str, list[str]]  # attr -> every invented value it may take (continent, language, ...)
    people: People  # the same people as entities["person"], split into IT and held-out, with strata

    def of(self, kind: str) -> list[Entity]:
        """Entities of one kind."""
        return self.entities[kind]

    def values(self, kind: str, attr: str) -> list[str]:
        """Distinct values of ``attr`` over entities of ``kind`` and its pool, sorted (distractors)."""
        return sorted({e.attrs[attr] for e in self.entities[kind]} | set(self.pools.get(attr, ())))

    def askable(self, kind: str) -> list[Entity]:
        """The entities of ``kind`` that instruction data may ask about: of people, the IT people only."""
        return self.people.it if kind == "person" else self.entities[kind]

    def facts(self) -> list[tuple[Relation, Entity]]:
        """Every (relation, entity) pair of the kinds other than people (people's facts: biographies)."""
        return [(r, e) for r in RELATIONS for e in self.entities[r.kind]]


def build_world(
    seed: int,
    size: int,
    it_people: int = 100,
    heldout_people: int = 200,
    exposures: tuple[int, ...] = (12, 48),
) -> World:
    """Generate the world: ``size`` cities, animals and elements, ``size // 2`` countries, and
    ``it_people + heldout_people`` people in strata of ``exposures`` biographies each."""
    rng = random.Random(f"world-{seed}")
    names = vocab.NameMaker(rng)
    n_countries = max(4, size // 2)
    continents = [names.make(2, 3, "ia") for _ in range(5)]
    languages = [names.make(2, 2, "ish") for _ in range(max(4, n_countries // 2))]
    currencies = [names.make(2, 2).lower() for _ in range(max(4, n_countries // 2))]
    rivers = [names.make(2, 2) for _ in range(max(4, size // 3))]
    countries = [Entity("country", names.make()) for _ in range(n_countries)]
    cities = [Entity("city", names.make()) for _ in range(max(size, n_countries))]
    people = make_people(
        rng, names, [c.name for c in cities[:16]], it_people, heldout_people, list(exposures)
    )
    animals = [Entity("animal", names.make().lower()) for _ in range(size)]
    elements = [Entity("element", names.make(2, 2, "ium")) for _ in range(size)]
    for i, c in enumerate(countries):
        c.attrs = {
            "capital": cities[i].name,
            "continent": rng.choice(continents),
            "language": rng.choice(languages),
            "currency": rng.choice(currencies),
        }
    for i, c in enumerate(cities):
        # the first n_countries cities are the capitals, so capital and country agree
        country = countries[i] if i < n_countries else rng.choice(countries)
        c.attrs = {
            "country": country.name,
            "river": rng.choice(rivers),
            "product": rng.choice(vocab.PRODUCTS),
        }
    for a in animals:
        a.attrs = {
            "diet": rng.choice(vocab.DIETS),
            "habitat": rng.choice(vocab.HABITATS),
            "color": rng.choice(vocab.COLORS),
            "legs": rng.choice(vocab.LEG_COUNTS),
        }
    symbols: set[str] = set()
    for e in elements:
        sym = e.name[0] + rng.choice("abcdefghklmnprstvxz")
        while sym in symbols:
            sym = e.name[0] + rng.choice("abcdefghklmnprstvxz")
        symbols.add(sym)
        e.attrs = {
            "symbol": sym,
            "color": rng.choice(vocab.COLORS),
            "state": rng.choice(vocab.STATES),
            "discoverer": rng.choice(people.it).name,  # a held-out person's name never enters the mixture
        }
    entities = {
        "country": countries,
        "city": cities,
        "person": people.all,
        "animal": animals,
        "element": elements,
    }
    pools = {
        "continent": continents,
        "language": languages,
        "currency": currencies,
        "river": rivers,
        "capital": [c.name for c in cities],
        "country": [c.name for c in countries],
        "discoverer": [p.name for p in people.it],
        "product": list(vocab.PRODUCTS),
        "habitat": list(vocab.HABITATS),
        "color": list(vocab.COLORS),
        "legs": list(vocab.LEG_COUNTS),
        "state": list(vocab.STATES),
        "diet": list(vocab.DIETS),
        **person_pools([c.name for c in cities[:16]]),
    }
    return World(entities, pools, people)
