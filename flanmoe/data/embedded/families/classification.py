"""Classification and yes/no judgement families (category ``classification``)."""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families.base import Example, Family, GenContext, registrar

FAMILIES: list[Family] = []
fam = registrar(FAMILIES, "classification")

_POS = ("wonderful", "great", "lovely", "excellent", "friendly", "delicious", "pleasant", "superb")
_NEG = ("terrible", "awful", "rude", "boring", "dirty", "horrible", "cold", "disappointing")
_THINGS = ("food", "room", "service", "film", "book", "concert", "trip", "coffee", "staff", "music")
_TOPICS: dict[str, tuple[str, ...]] = {
    "sports": (
        "The team scored a late goal",
        "The runner won the race",
        "Fans cheered at the match",
        "The coach praised the players",
        "She swam ten laps before the final",
    ),
    "weather": (
        "Heavy rain is expected tomorrow",
        "A cold wind blew all night",
        "The sky cleared after the storm",
        "Snow covered the hills",
        "It will be sunny and warm",
    ),
    "food": (
        "The soup needed more salt",
        "He baked fresh bread",
        "We ate rice with beans",
        "The cake was sweet",
        "She cooked a spicy stew",
    ),
    "music": (
        "The band played a slow song",
        "He practiced the violin",
        "The choir sang loudly",
        "Her new album has ten tracks",
        "The drummer kept the beat",
    ),
}
BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}


def balanced_sequence(rng: random.Random, pairs: int) -> list[str]:
    """A random well-nested bracket sequence with ``pairs`` pairs."""
    out, stack, opened = [], [], 0
    while opened < pairs or stack:
        if opened < pairs and (not stack or rng.random() < 0.5):
            b = rng.choice(list(BRACKETS))
            out.append(b)
            stack.append(b)
            opened += 1
        else:
            out.append(BRACKETS[stack.pop()])
    return out


@fam(
    "word_category",
    (
        "What kind of thing is a {w}?",
        'Classify the word "{w}" into a category.',
        "Is a {w} an animal, a fruit, a vehicle or something else? Name its category.",
    ),
    "A {w} is a kind of {answer}.",
)
def _word_category(rng: random.Random, ctx: GenContext) -> Example:
    cat = rng.choice(sorted(vocab.CATEGORIES))
    w = rng.choice(vocab.CATEGORIES[cat])
    others = [c for c in sorted(vocab.CATEGORIES) if c != cat and w not in vocab.CATEGORIES[c]]
    opts = [cat] + rng.sample(others, 3)
    rng.shuffle(opts)
    return Example({"w": w}, cat, tuple(opts))


@fam(
    "sentiment",
    (
        "Review: {t}\nIs this review positive or negative?",
        "What is the sentiment of this review? {t}",
        '"{t}" Did the writer like it?',
    ),
    "{t} That review is {answer}.",
)
def _sentiment(rng: random.Random, ctx: GenContext) -> Example:
    pos = rng.random() < 0.5
    words = _POS if pos else _NEG
    a, b = rng.sample(_THINGS, 2)
    t = f"The {a} was {rng.choice(words)} and the {b} was {rng.choice(words)}."
    return Example({"t": t}, "positive" if pos else "negative", ("positive", "negative"))


@fam(
    "topic",
    ("What is this sentence about? {t}", "Sentence: {t}\nTopic:", 'Name the topic of: "{t}"'),
    "{t}. The topic is {answer}.",
)
def _topic(rng: random.Random, ctx: GenContext) -> Example:
    topic = rng.choice(sorted(_TOPICS))
    t = rng.choice(_TOPICS[topic])
    return Example({"t": t}, topic, tuple(sorted(_TOPICS)))


@fam(
    "is_palindrome",
    ('Is "{w}" a palindrome?', "Does {w} read the same forwards and backwards?", "Palindrome check: {w}"),
    "Palindrome test for {w}: {answer}.",
)
def _palindrome(rng: random.Random, ctx: GenContext) -> Example:
    if rng.random() < 0.5:
        half = "".join(rng.choice("abcdelmnorst") for _ in range(rng.randint(1, 3)))
        w = half + ("" if rng.random() < 0.5 else rng.choice("aeiou")) + half[::-1]
    else:
        w = rng.choice(vocab.WORDS)
    return Example({"w": w}, "yes" if w == w[::-1] else "no", ("yes", "no"))


@fam(
    "balanced_brackets",
    (
        'Are the brackets in "{s}" balanced?',
        "Is this bracket sequence properly closed: {s}",
        "Check whether every bracket is matched: {s}",
    ),
    "Bracket sequence {s}, balanced: {answer}.",
)
def _balanced(rng: random.Random, ctx: GenContext) -> Example:
    seq = balanced_sequence(rng, rng.randint(1, 3))
    if rng.random() < 0.5:  # corrupt: drop or replace one bracket
        i = rng.randrange(len(seq))
        seq = (
            seq[:i] + seq[i + 1 :]
            if rng.random() < 0.5
            else seq[:i] + [rng.choice("([{<)]}>")] + seq[i + 1 :]
        )
    s = " ".join(seq)
    ok = _is_balanced(seq)
    return Example({"s": s}, "Yes" if ok else "No", ("Yes", "No"))  # BBH casing, as navigate


def _is_balanced(seq: list[str]) -> bool:
    stack: list[str] = []
    for b in seq:
        if b in BRACKETS:
            stack.append(b)
        elif not stack or BRACKETS[stack.pop()] != b:
            return False
    return not stack


@fam(
    "equation_check",
    (
        "Is it true that {a} + {b} = {c}?",
        "True or false: {a} + {b} = {c}",
        "Check the sum: {a} + {b} = {c}. Correct?",
    ),
    "{a} + {b} = {c} is {answer}.",
)
def _equation(rng: random.Random, ctx: GenContext) -> Example:
    a, b = rng.randint(0, ctx.max_operand), rng.randint(0, ctx.max_operand)
    c = a + b if rng.random() < 0.5 else a + b + rng.choice((-2, -1, 1, 2))
    return Example(
        {"a": str(a), "b": str(b), "c": str(c)}, "true" if c == a + b else "false", ("true", "false")
    )


@fam(
    "logic_gate",
    ("What is the value of: {e}?", "Evaluate the logical expression {e}.", 'Is "{e}" True or False?'),
    "{e} evaluates to {answer}.",
)
def _logic_gate(rng: random.Random, ctx: GenContext) -> Example:
    a, b = rng.choice((True, False)), rng.choice((True, False))
    kind = rng.randrange(3)
    if kind == 0:
        e, v = f"{a} and {b}", a and b
    elif kind == 1:
        e, v = f"{a} or {b}", a or b
    else:
        e, v = f"not {a}", not a
    return Example({"e": e}, str(v), ("True", "False"))
