"""Character-level string manipulation of short English words (category ``string_manipulation``)."""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families.base import (
    Example,
    Family,
    GenContext,
    make_options,
    near_numbers,
    registrar,
)

FAMILIES: list[Family] = []
fam = registrar(FAMILIES, "string_manipulation")
ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _perturb(rng: random.Random, s: str, n: int = 3) -> list[str]:
    """Near-miss strings (swapped letters, dropped letter, repeated letter) as distractors."""
    out = []
    for _ in range(n * 3):
        i = rng.randrange(max(1, len(s) - 1))
        kind = rng.randrange(3)
        if kind == 0 and len(s) > 1:
            t = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
        elif kind == 1 and len(s) > 2:
            t = s[:i] + s[i + 1 :]
        else:
            t = s[: i + 1] + s[i] + s[i + 1 :]
        if t != s:
            out.append(t)
    return out


@fam(
    "reverse_word",
    ('Reverse the word "{w}".', 'Spell "{w}" backwards.', "Write the letters of {w} in reverse order."),
    "{w} backwards is {answer}.",
)
def _reverse(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    return Example({"w": w}, w[::-1], make_options(rng, w[::-1], _perturb(rng, w[::-1]) + [w]))


@fam(
    "first_letter",
    (
        'What is the first letter of "{w}"?',
        "Which letter does {w} start with?",
        "Give the initial letter of the word {w}.",
    ),
    "{w} starts with {answer}.",
)
def _first_letter(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    return Example({"w": w}, w[0], make_options(rng, w[0], list(w[1:])))


@fam(
    "last_letter",
    (
        'What is the last letter of "{w}"?',
        "Which letter does {w} end with?",
        "Give the final letter of the word {w}.",
    ),
    "{w} ends with {answer}.",
)
def _last_letter(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    return Example({"w": w}, w[-1], make_options(rng, w[-1], list(w[:-1])))


@fam(
    "word_length",
    (
        'How many letters are in "{w}"?',
        "Count the letters of the word {w}.",
        "What is the length of the word {w}?",
    ),
    "{w} has {answer} letters.",
)
def _length(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    return Example({"w": w}, str(len(w)), near_numbers(rng, len(w)))


@fam(
    "uppercase",
    ('Write "{w}" in capital letters.', "Convert {w} to uppercase.", "Uppercase the word: {w}"),
    "{w} in capitals is {answer}.",
)
def _upper(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    return Example({"w": w}, w.upper(), make_options(rng, w.upper(), [w, w.capitalize(), w[::-1].upper()]))


@fam(
    "sort_letters",
    (
        'Sort the letters of "{w}" alphabetically.',
        "Arrange the letters of {w} in alphabetical order.",
        "Put the letters of the word {w} in order from a to z.",
    ),
    "The letters of {w} sorted are {answer}.",
)
def _sort_letters(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice([w for w in vocab.WORDS if len(w) <= 5])
    ans = "".join(sorted(w))
    return Example({"w": w}, ans, make_options(rng, ans, _perturb(rng, ans) + [w]))


@fam(
    "letter_at_position",
    (
        'What is the {k} letter of "{w}"?',
        "In the word {w}, which letter is {k}?",
        "Give the {k} letter of {w}.",
    ),
    "The {k} letter of {w} is {answer}.",
)
def _letter_at(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    i = rng.randrange(min(len(w), len(ORDINALS)))
    return Example({"w": w, "k": ORDINALS[i]}, w[i], make_options(rng, w[i], list(w)))


@fam(
    "alphabetical_first",
    (
        "Which comes first in alphabetical order: {a} or {b}?",
        "In a dictionary, which word appears first, {a} or {b}?",
        "Alphabetically, which is earlier: {a}, {b}?",
    ),
    "Of {a} and {b}, {answer} comes first in alphabetical order.",
)
def _alpha_first(rng: random.Random, ctx: GenContext) -> Example:
    a, b = rng.sample(vocab.WORDS, 2)
    return Example({"a": a, "b": b}, min(a, b), (a, b))
