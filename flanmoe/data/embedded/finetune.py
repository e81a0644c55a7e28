"""Single-task fine-tuning sets (train / validation / test) for held-out tasks, FLAN columns.

None of these tasks is an instruction family; each is within reach: its knowledge is in the corpus
(fact_verification, entity_typing) or its skill combines trained ones (list_sum, acronym).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.facts import state
from flanmoe.data.embedded.people import PERSON_RELATIONS
from flanmoe.data.embedded.world import KINDS, RELATIONS, World

FINETUNE_COLUMNS = ("inputs", "targets", "task_name")
# (inputs, targets, group): rows of one group (one world fact, one entity) never straddle splits
Generator = Callable[[random.Random, World, int], tuple[str, str, str]]


def fact_verification(rng: random.Random, world: World, max_operand: int) -> tuple[str, str, str]:
    """'Claim: The capital of X is Y. Is the claim true or false?' -> 'true' / 'false'."""
    rel = rng.choice(RELATIONS + PERSON_RELATIONS)
    ent = rng.choice(world.askable(rel.kind))  # of people, IT people only (held-out facts: corpus only)
    group = f"{rel.kind}.{rel.attr}:{ent.name}"
    true = rng.random() < 0.5
    if not true:  # the same relation with another entity's value
        wrong = [v for v in world.values(rel.kind, rel.attr) if v != ent.attrs[rel.attr]]
        ent = type(ent)(ent.kind, ent.name, {**ent.attrs, rel.attr: rng.choice(wrong)})
    claim = state(rel, ent, rng)
    tmpl = rng.choice(("Claim: {c}\nIs the claim true or false?", "True or false? {c}"))
    return tmpl.format(c=claim), "true" if true else "false", group


def list_sum(rng: random.Random, world: World, max_operand: int) -> tuple[str, str, str]:
    """'Add up all of these numbers: 3, 5, 1' -> '9'."""
    nums = [rng.randint(0, max(3, max_operand // 2)) for _ in range(rng.randint(3, 4))]
    tmpl = rng.choice(("Add up all of these numbers: {l}", "What is the total of {l}?"))
    inputs = tmpl.format(l=", ".join(map(str, nums)))
    return inputs, str(sum(nums)), inputs


def entity_typing(rng: random.Random, world: World, max_operand: int) -> tuple[str, str, str]:
    """'What kind of thing is Toluma: a country, a city, a person, an animal or an element?' -> 'city'."""
    kind = rng.choice(KINDS)
    ent = rng.choice(world.of(kind))
    tmpl = rng.choice(
        (
            "What kind of thing is {n}: a country, a city, a person, an animal or an element?",
            "Is {n} a country, a city, a person, an animal or an element?",
        )
    )
    return tmpl.format(n=ent.name), kind, ent.name


def acronym(rng: random.Random, world: World, max_operand: int) -> tuple[str, str, str]:
    """'Make an acronym from the first letters of: big red dog' -> 'BRD'."""
    words = rng.sample(vocab.WORDS, rng.randint(2, 4))
    tmpl = rng.choice(("Make an acronym from the first letters of: {w}", 'Acronym of "{w}":'))
    inputs = tmpl.format(w=" ".join(words))
    return inputs, "".join(w[0] for w in words).upper(), inputs


FINETUNE_TASKS: dict[str, Generator] = {
    "fact_verification": fact_verification,
    "list_sum": list_sum,
    "entity_typing": entity_typing,
    "acronym": acronym,
}
# binary tasks whose answers are kept balanced, so a constant guess scores chance
BALANCED = {"fact_verification": ("true", "false")}


def build_finetune(
    world: World, seed: int, n_train: int, n_eval: int, max_operand: int
) -> dict[str, dict[str, dict[str, list[str]]]]:
    """Task -> split (train / validation / test) -> columns.

    Inputs are distinct, and a group (a world fact, an entity) falls in one split only, so a test
    fact is known from the corpus, never from fine-tuning. A task with few distinct inputs
    (entity_typing on a small world) keeps a quarter of them for each eval split and repeats train
    rows up to ``n_train``.
    """
    out = {}
    total = n_train + 2 * n_eval
    for name, gen in FINETUNE_TASKS.items():
        rng = random.Random(f"finetune-{seed}-{name}")
        groups: dict[str, list[tuple[str, str]]] = {}
        seen: set[str] = set()
        counts = dict.fromkeys(BALANCED.get(name, ()), 0)
        for _ in range(total * 20):
            inputs, targets, group = gen(rng, world, max_operand)
            if counts and counts[targets] > min(counts.values()):
                continue  # this answer is ahead: wait for the other one
            if inputs not in seen:
                if counts:
                    counts[targets] += 1
                seen.add(inputs)
                groups.setdefault(group, []).append((inputs, targets))
            if len(seen) == total:
                break
        n_ev = min(n_eval, len(seen) // 4) if len(seen) < total else n_eval
        parts: dict[str, list[tuple[str, str]]] = {"test": [], "validation": [], "train": []}
        for rows in groups.values():  # whole groups, in order of first appearance
            split = next((s for s in ("test", "validation") if len(parts[s]) < n_ev), "train")
            parts[split] += rows
        train = parts["train"]
        parts["train"] = [train[i % len(train)] for i in range(n_train)] if train else []
        out[name] = {
            split: {
                "inputs": [r[0] for r in parts[split]],
                "targets": [r[1] for r in parts[split]],
                "task_name": [name] * len(parts[split]),
            }
            for split in ("train", "validation", "test")
        }
    return out
