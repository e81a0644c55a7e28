"""Held-out multiple-choice suite in the MMLU schema (``question``, ``subject``, ``choices``, ``answer``),
and the knowledge probe that states the same held-out facts as the corpus does.

- People subjects (``people_x12``, ``people_x48``: one per exposure stratum) ask every fact of every
  held-out person, whose facts are only in the corpus's biographies, with the relations instruction
  tuning asks about IT people: transfer to held-out *entities*. Their dev and validation questions
  ask about IT people.
- Knowledge subjects ask the world relations no instruction family asks: transfer to held-out
  *relations* (a secondary probe). Skill subjects combine trained skills in a new format.
- The probe (``build_probe``): each held-out person's fact as a statement in one of the corpus's own
  wordings, the value cut out (``prefix``, ``suffix``), with the very choices and answer of its
  MMLU-style question, so that storage (probe) and extraction (question) pair fact by fact.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.corpus import UNIT_FACTS
from flanmoe.data.embedded.facts import Entity, Relation
from flanmoe.data.embedded.people import PERSON_RELATIONS, cloze, subject
from flanmoe.data.embedded.world import HELDOUT_RELATIONS, World

MMLU_COLUMNS = ("question", "subject", "choices", "answer")
PROBE_COLUMNS = ("subject", "prefix", "suffix", "question", "choices", "answer")
KNOWLEDGE_SUBJECTS = tuple(sorted({r.subject for r in HELDOUT_RELATIONS if r.subject}))
SKILL_SUBJECTS = ("elementary_mathematics", "lexicography", "measurement")
MMLU_SUBJECTS = KNOWLEDGE_SUBJECTS + SKILL_SUBJECTS  # and one people subject per stratum (people_subjects)
DEV_PER_SUBJECT = 5  # as in MMLU: 5 dev questions per subject for few-shot prompts
_EXTRA_POOLS = {"state": ("plasma",)}  # so every question has 4 distinct choices

Item = tuple[str, list[str], int]  # question, choices, answer index


def _choices(rng: random.Random, answer: str, pool: list[str]) -> tuple[list[str], int]:
    others = sorted({p for p in pool if p != answer})
    opts = [answer] + rng.sample(others, 3)
    rng.shuffle(opts)
    return opts, opts.index(answer)


def _knowledge_items(world: World, subject: str, rng: random.Random) -> list[Item]:
    """Every (fact, phrasing) of a subject: facts shuffled, first phrasing of all facts first."""
    facts = [(r, e) for r in HELDOUT_RELATIONS if r.subject == subject for e in world.of(r.kind)]
    rng.shuffle(facts)
    n_phr = max(len(r.questions) for r, _ in facts)
    items = []
    for k in range(n_phr):
        for rel, ent in facts:
            if k >= len(rel.questions):
                continue
            pool = world.values(rel.kind, rel.attr) + list(_EXTRA_POOLS.get(rel.attr, ()))
            choices, ans = _choices(rng, ent.attrs[rel.attr], pool)
            items.append((vocab.fix_articles(rel.questions[k].format(s=ent.name)), choices, ans))
    return items


def people_subjects(exposures: list[int] | tuple[int, ...]) -> tuple[str, ...]:
    """The people subjects, one per exposure stratum, in the order of ``exposures``."""
    return tuple(subject(n) for n in exposures)


def _person_item(rel: Relation, person: Entity, world: World, rng: random.Random) -> Item:
    choices, ans = _choices(rng, person.attrs[rel.attr], world.values("person", rel.attr))
    return vocab.fix_articles(rng.choice(rel.questions).format(s=person.name)), choices, ans


def _people_facts(people: list[Entity], rng: random.Random) -> list[tuple[Relation, Entity]]:
    facts = [(r, p) for p in people for r in PERSON_RELATIONS]
    rng.shuffle(facts)
    return facts


def build_people(world: World, seed: int, n_val: int) -> tuple[dict[str, dict[str, list]], dict[str, list]]:
    """People subjects as MMLU splits (test: every fact of every held-out person of the stratum;
    dev and validation: IT people of the stratum), and the probe's columns (one row per test question)."""
    splits: dict[str, dict[str, list]] = {
        s: {c: [] for c in MMLU_COLUMNS} for s in ("dev", "validation", "test")
    }
    probe: dict[str, list] = {c: [] for c in PROBE_COLUMNS}
    people = world.people
    for n in sorted(set(people.exposure.values())):
        subj = subject(n)
        rng = random.Random(f"mmlu-{seed}-{subj}")
        it = _people_facts(people.stratum(people.it, n), rng)
        parts = {"dev": it[:DEV_PER_SUBJECT], "validation": it[DEV_PER_SUBJECT : DEV_PER_SUBJECT + n_val]}
        parts["test"] = _people_facts(people.stratum(people.heldout, n), rng)
        for split, facts in parts.items():
            for rel, person in facts:
                q, choices, ans = _person_item(rel, person, world, rng)
                for col, v in zip(MMLU_COLUMNS, (q, subj, choices, ans), strict=True):
                    splits[split][col].append(v)
                if split == "test":
                    prefix, suffix = cloze(rel, person, rng)
                    for col, v in zip(PROBE_COLUMNS, (subj, prefix, suffix, q, choices, ans), strict=True):
                        probe[col].append(v)
    return splits, probe


def _num_choices(rng: random.Random, value: int, wrong: list[int]) -> tuple[list[str], int]:
    pool = [str(w) for w in wrong if w != value] + [str(value + d) for d in (-3, -2, -1, 1, 2, 3)]
    return _choices(rng, str(value), pool)


def _math_item(rng: random.Random) -> Item:
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        q, v, wrong = f"What is {a} * {b} + {c}?", a * b + c, [a * (b + c), a + b + c]
    else:
        q, v, wrong = f"What is ({a} + {b}) * {c}?", (a + b) * c, [a + b * c, a + b + c]
    return (q, *_num_choices(rng, v, wrong))


def _lexicography_item(rng: random.Random) -> Item:
    words = rng.sample(vocab.WORDS, 4)
    kind = rng.randrange(4)
    if kind == 0:  # the answer must be unique, so draw until exactly one word qualifies
        target = words[0][-1]
        q, ok = (
            f"Which of the following words ends with the letter '{target}'?",
            [w[-1] == target for w in words],
        )
    elif kind == 1:
        target = words[0][0]
        q, ok = (
            f"Which of the following words begins with the letter '{target}'?",
            [w[0] == target for w in words],
        )
    elif kind == 2:
        n = len(words[0])
        q, ok = f"Which of the following words has exactly {n} letters?", [len(w) == n for w in words]
    else:
        q, ok = (
            "Which of the following words comes first in alphabetical order?",
            [w == min(words) for w in words],
        )
    if sum(ok) != 1:
        return _lexicography_item(rng)
    order = list(range(4))
    rng.shuffle(order)
    return q, [words[i] for i in order], [ok[i] for i in order].index(True)


def _measurement_item(rng: random.Random) -> Item:
    _, units, sub, per = rng.choice(UNIT_FACTS)
    n = rng.randint(2, 9 if per < 100 else 4)
    q = rng.choice(("How many {s} are in {n} {u}?", "{n} {u} make how many {s}?")).format(s=sub, n=n, u=units)
    return (q, *_num_choices(rng, n * per, [n + per, per, n * per + per]))


SKILL_GENERATORS: dict[str, Callable[[random.Random], Item]] = {
    "elementary_mathematics": _math_item,
    "lexicography": _lexicography_item,
    "measurement": _measurement_item,
}


def _skill_items(subject: str, rng: random.Random, n: int) -> list[Item]:
    """Up to ``n`` distinct items (gives up after many repeats).

    Distinct means another question text; for lexicography, whose questions are few ('ends with
    the letter d'), another set of words.
    """
    items, seen = [], set()
    for _ in range(n * 20):
        it = SKILL_GENERATORS[subject](rng)
        key = (it[0], tuple(sorted(it[1]))) if subject == "lexicography" else it[0]
        if key not in seen:
            seen.add(key)
            items.append(it)
        if len(items) == n:
            break
    return items


def build_mmlu(
    world: World, seed: int, n_test: int, n_val: int
) -> tuple[dict[str, dict[str, list]], dict[str, list]]:
    """Splits ``dev`` (5 per subject), ``validation`` and ``test`` as MMLU columns.

    Knowledge subjects with fewer facts than asked reuse facts with another phrasing; people subjects
    hold every held-out person's facts (``n_test`` does not apply to them). Also returns the probe's
    columns (``build_people``).
    """
    splits: dict[str, dict[str, list]] = {
        s: {c: [] for c in MMLU_COLUMNS} for s in ("dev", "validation", "test")
    }
    for subj in MMLU_SUBJECTS:
        rng = random.Random(f"mmlu-{seed}-{subj}")
        need = DEV_PER_SUBJECT + n_val + n_test
        if subj in KNOWLEDGE_SUBJECTS:
            items = _knowledge_items(world, subj, rng)
            items = (items * (need // max(1, len(items)) + 1))[:need]
        else:
            items = _skill_items(subj, rng, need)
        parts = {
            "dev": items[:DEV_PER_SUBJECT],
            "validation": items[DEV_PER_SUBJECT : DEV_PER_SUBJECT + n_val],
            "test": items[DEV_PER_SUBJECT + n_val :],
        }
        for split, its in parts.items():
            for q, choices, ans in its:
                cols = splits[split]
                cols["question"].append(q)
                cols["subject"].append(subj)
                cols["choices"].append(choices)
                cols["answer"].append(ans)
    people, probe = build_people(world, seed, n_val)
    for split, cols in people.items():
        for col, values in cols.items():
            splits[split][col] += values
    return splits, probe
