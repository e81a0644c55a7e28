"""The world's people: held-out *entities*, not held-out relations (Physics of LMs 3.1's design).

Every person has the same five attributes (``PERSON_RELATIONS``), each drawn independently from a pool
of 10-16 one-word values. People are split into **IT people**, whose facts the instruction mixture
asks about, and **held-out people**, whose facts appear only in the pretraining corpus, in
biographies; the MMLU-style suite asks the *same* relations about the held-out people. Instruction
tuning can then teach the model to extract what it stored, and the held-out score measures whether
that transfers to individuals it never saw asked about.

Biographies follow what made extraction work in 3.1: every biography states all five facts with the
full name in each sentence, in a fresh wording (one of >= 10 templates per relation) and a permuted
sentence order, and every person gets many of them. People fall in **exposure strata** (biographies
per person: ``bio_exposures``), so that every knowledge score can be read against exposures.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.facts import Entity, Relation, state_span

PETS = ("dog", "cat", "parrot", "rabbit", "goat", "horse", "canary", "tortoise", "hamster", "goldfish",
        "ferret", "donkey")  # fmt: skip
BIO_TAG = "[biography]"  # in front of every biography: a domain tag (Physics of LMs 3.3)
QA_TAG = "[questions]"  # in front of every QA document (mixed training, ``qa_documents``)

PERSON_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "person",
        "profession",
        (
            "{s} works as a {o}.",
            "{s} is a {o} by trade.",
            "By profession, {s} is a {o}.",
            "{s} earns a living as a {o}.",
            "{s} trained for years to become a {o}.",
            "Everyone in town knows {s} as the local {o}.",
            "{s} has worked as the village {o} for many years.",
            "The job of {s} is that of a {o}.",
            "{s} took up work as a {o} after school.",
            "Colleagues describe {s} as the best {o} in the region.",
        ),
        (
            "What is the profession of {s}?",
            "What does {s} do for a living?",
            "What is {s}'s job?",
            "Which trade does {s} work in?",
        ),
    ),
    Relation(
        "person",
        "hometown",
        (
            "{s} was born in {o}.",
            "{s} grew up in the city of {o}.",
            "{s} comes from {o}.",
            "The hometown of {s} is {o}.",
            "{s} spent a happy childhood in {o}.",
            "{s} is a native of {o}.",
            "Before moving away, {s} lived in {o}.",
            "{s} still visits family in {o}.",
            "The birthplace of {s} is the city of {o}.",
            "{s} was raised in {o}.",
        ),
        (
            "Where was {s} born?",
            "Which city does {s} come from?",
            "What is the hometown of {s}?",
            "In which city did {s} grow up?",
        ),
    ),
    Relation(
        "person",
        "instrument",
        (
            "{s} plays the {o}.",
            "{s} is a fine player of the {o}.",
            "In the evenings {s} practises the {o}.",
            "{s} learned to play the {o} as a child.",
            "The instrument of {s} is the {o}.",
            "{s} performs on the {o} at weddings.",
            "Friends say {s} plays the {o} beautifully.",
            "{s} owns an old {o} and plays it daily.",
            "{s} gives lessons on the {o}.",
            "At festivals {s} always brings the {o}.",
        ),
        (
            "Which instrument does {s} play?",
            "What instrument is {s} known for playing?",
            "What does {s} play in the evenings?",
            "On which instrument does {s} perform?",
        ),
    ),
    Relation(
        "person",
        "pet",
        (
            "{s} keeps a {o} as a pet.",
            "The pet of {s} is a {o}.",
            "{s} owns a {o}.",
            "{s} lives with a pet {o}.",
            "At home {s} looks after the family {o}.",
            "{s} takes good care of a pet {o}.",
            "Neighbours often see {s} walking the family {o}.",
            "{s} adopted a {o} years ago.",
            "The animal that lives with {s} is a {o}.",
            "{s} feeds the family {o} every morning.",
        ),
        (
            "Which animal does {s} keep as a pet?",
            "What is the pet of {s}?",
            "What kind of pet does {s} own?",
            "Which animal lives with {s}?",
        ),
    ),
    Relation(
        "person",
        "birth_month",
        (
            "{s} was born in the month of {o}.",
            "{s} has a birthday in {o}.",
            "The birthday of {s} falls in {o}.",
            "{s} celebrates a birthday every {o}.",
            "Every year in {o}, {s} turns a year older.",
            "{s} was born on a cold day in {o}.",
            "The birth month of {s} is {o}.",
            "Each {o}, the friends of {s} throw a birthday party.",
            "{s} came into the world in {o}.",
            "In {o}, {s} blows out the birthday candles.",
        ),
        (
            "In which month was {s} born?",
            "When is the birthday of {s}?",
            "What is the birth month of {s}?",
            "In what month does {s} celebrate a birthday?",
        ),
    ),
)
PERSON_ATTRS = tuple(r.attr for r in PERSON_RELATIONS)
# a template whose text before the value ends with an article ('as a {o}') gives the answer's first
# letter away once articles are fixed ('an architect'): the cloze probe states facts without those
_ARTICLE_BEFORE = re.compile(r"\ban? $")


@dataclass
class People:
    """The world's people, split: ``it`` (asked by the instruction mixture) and ``heldout`` (only in
    biographies); ``exposure[name]``: biographies of that person in the corpus (its stratum)."""

    it: list[Entity]
    heldout: list[Entity]
    exposure: dict[str, int]

    @property
    def all(self) -> list[Entity]:
        return self.it + self.heldout

    def stratum(self, group: list[Entity], n: int) -> list[Entity]:
        """The people of ``group`` with ``n`` biographies each."""
        return [p for p in group if self.exposure[p.name] == n]


def make_people(
    rng: random.Random, names: vocab.NameMaker, cities: list[str], n_it: int, n_heldout: int,
    exposures: list[int],
) -> People:  # fmt: skip
    """``n_it + n_heldout`` people with independent attributes; strata assigned round robin per group."""
    pools = person_pools(cities)
    people = []
    for _ in range(n_it + n_heldout):
        person = Entity("person", f"{rng.choice(vocab.FIRST_NAMES)} {names.make(2, 3)}")
        person.attrs = {attr: rng.choice(pools[attr]) for attr in PERSON_ATTRS}
        people.append(person)
    it, heldout = people[:n_it], people[n_it:]
    exposure = {p.name: exposures[i % len(exposures)] for group in (it, heldout) for i, p in enumerate(group)}
    return People(it, heldout, exposure)


def person_pools(cities: list[str]) -> dict[str, list[str]]:
    """Every value each person attribute may take (the distractors of its questions)."""
    return {
        "profession": list(vocab.PROFESSIONS),
        "hometown": list(cities),
        "instrument": list(vocab.INSTRUMENTS),
        "pet": list(PETS),
        "birth_month": list(vocab.MONTHS),
    }


def subject(n: int) -> str:
    """The MMLU-style subject (and probe stratum) of held-out people with ``n`` biographies each."""
    return f"people_x{n}"


def biography(person: Entity, rng: random.Random) -> tuple[str, list[int]]:
    """One freshly worded biography: the tag, then every fact once, in random order and phrasing, the
    full name in each sentence. Returns the text and its values' offsets ``[s0, e0, s1, e1, ...]``."""
    rels = list(PERSON_RELATIONS)
    rng.shuffle(rels)
    text, spans = BIO_TAG, []
    for rel in rels:
        sentence, (a, b) = state_span(rel, person, rng)
        text += " "
        spans += [len(text) + a, len(text) + b]
        text += sentence
    return text, spans


def biographies(people: People, rng: random.Random) -> Iterator[tuple[str, str, list[int]]]:
    """(text, url, salient spans) of every biography: ``exposure[name]`` per person, people interleaved."""
    todo = [(p, k) for p in people.all for k in range(people.exposure[p.name])]
    rng.shuffle(todo)
    for person, k in todo:
        text, spans = biography(person, rng)
        yield text, f"https://people.embedded/{person.name.replace(' ', '_')}/{k}", spans


def qa_documents(people: People, per_person: int, rng: random.Random) -> Iterator[tuple[str, str, list[int]]]:
    """``per_person`` documents of question-answer pairs for every IT person (Physics of LMs 3.1's
    "mixed training": QA of some people inside pretraining), each all five facts asked in a fresh
    wording and order, the answers marked as salient; held-out people are never asked."""
    todo = [(p, k) for p in people.it for k in range(per_person)]
    rng.shuffle(todo)
    for person, k in todo:
        rels = list(PERSON_RELATIONS)
        rng.shuffle(rels)
        text, spans = QA_TAG, []
        for rel in rels:
            question = vocab.fix_articles(rng.choice(rel.questions).format(s=person.name))
            text += f" Question: {question} Answer: "
            spans += [len(text), len(text) + len(person.attrs[rel.attr])]
            text += person.attrs[rel.attr] + "."
        yield text, f"https://qa.embedded/{person.name.replace(' ', '_')}/{k}", spans


def cloze(rel: Relation, person: Entity, rng: random.Random) -> tuple[str, str]:
    """(prefix, suffix) of one statement of the fact in the corpus's own wording, the value cut out;
    templates with an article right before the value are left out (the article would give it away)."""
    for _ in range(100):
        sentence, (a, b) = state_span(rel, person, rng)
        if not _ARTICLE_BEFORE.search(sentence[:a]):
            return sentence[:a], sentence[b:]
    raise ValueError(f"{rel.attr}: no template without an article before the value")


__all__ = [
    "BIO_TAG",
    "PERSON_ATTRS",
    "PERSON_RELATIONS",
    "QA_TAG",
    "People",
    "biographies",
    "biography",
    "cloze",
    "make_people",
    "qa_documents",
    "person_pools",
    "subject",
]
