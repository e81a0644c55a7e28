"""Reading comprehension over a short passage given in the input (category ``reading_comprehension``).

Passages are about fresh random people, so the answer is in the passage, never in memorized facts.
"""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families.base import Example, Family, GenContext, make_options, registrar

FAMILIES: list[Family] = []
fam = registrar(FAMILIES, "reading_comprehension")
TOWNS = (
    "Oakton",
    "Millbrook",
    "Stonebridge",
    "Ashford",
    "Redhill",
    "Lakeside",
    "Elmwood",
    "Fairport",
    "Greenvale",
    "Northgate",
    "Westbury",
    "Brightwater",
)
PETS = ("cat", "dog", "rabbit", "goat", "duck", "horse")


def passage(rng: random.Random, n_people: int = 3) -> tuple[str, list[dict[str, str]]]:
    """A passage about ``n_people`` people (name, job, town, pet, count) and their records."""
    people = []
    for name in rng.sample(vocab.FIRST_NAMES, n_people):
        people.append(
            {
                "name": name,
                "job": rng.choice(vocab.PROFESSIONS),
                "town": rng.choice(TOWNS),
                "pet": rng.choice(PETS),
                "count": rng.randint(1, 5),
            }
        )
    sents = []
    for p in people:
        c = p["count"]
        pets = f"{vocab.NUMBER_WORDS[c]} {p['pet']}{'s' if c > 1 else ''}"
        form = rng.randrange(3)
        if form == 0:
            sents.append(f"{p['name']} is a {p['job']} who lives in {p['town']} and has {pets}.")
        elif form == 1:
            sents.append(
                f"{p['name']} lives in {p['town']}. {p['name']} works as a {p['job']} and keeps {pets}."
            )
        else:
            sents.append(f"In {p['town']} there is a {p['job']} called {p['name']}, who owns {pets}.")
    return vocab.fix_articles(" ".join(sents)), people


_TEMPLATES = (
    "{p}\n\nBased on the passage, {q}",
    "Read the text and answer the question.\n\n{p}\n\nQuestion: {Q}",
    "{p}\nQ: {Q}\nA:",
)


def _reading_family(name: str, question: str, answer_key: str) -> None:
    def gen(rng: random.Random, ctx: GenContext) -> Example:
        text, people = passage(rng)
        who = rng.choice(people)
        ans = str(who[answer_key])
        if answer_key == "name":  # 'who is the baker' must have one answer
            if sum(p["job"] == who["job"] for p in people) > 1:
                return gen(rng, ctx)
        pool = [str(p[answer_key]) for p in people]  # distractors from the passage first
        extra = {
            "town": TOWNS,
            "job": vocab.PROFESSIONS,
            "name": vocab.FIRST_NAMES,
            "count": ("1", "2", "3", "4", "5"),
        }
        pool += rng.sample([x for x in extra[answer_key] if x not in pool], 2)
        q = question.format(**who)
        return Example({"p": text, "q": q, "Q": q[0].upper() + q[1:]}, ans, make_options(rng, ans, pool))

    fam(name, _TEMPLATES, "{p}")(gen)  # raw material: the passage, no question


_reading_family("passage_where", "where does {name} live?", "town")
_reading_family("passage_job", "what is the job of {name}?", "job")
_reading_family("passage_count", "how many {pet}s does {name} have?", "count")
_reading_family("passage_who", "who is the {job}?", "name")


@fam("passage_yes_no", _TEMPLATES, "{p}")
def _passage_yes_no(rng: random.Random, ctx: GenContext) -> Example:
    text, people = passage(rng)
    who = rng.choice(people)
    if rng.random() < 0.5:
        town, ans = who["town"], "Yes"
    else:
        town, ans = rng.choice([t for t in TOWNS if t != who["town"]]), "No"
    q = f"does {who['name']} live in {town}?"
    return Example({"p": text, "q": q, "Q": q[0].upper() + q[1:]}, ans, ("Yes", "No"))
