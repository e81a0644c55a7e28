"""Translation into codes and an invented language (category ``translation``).

Zorbic is a word-for-word invented language: its lexicon comes from the seed and is stated in the
pretraining corpus, so translating needs both the memorized lexicon and the instruction format.
"""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families.base import Example, Family, GenContext, make_options, registrar

FAMILIES: list[Family] = []
fam = registrar(FAMILIES, "translation")
LEXICON_SIZE = 60


def build_lexicon(seed: int, reserved: set[str] | None = None) -> dict[str, str]:
    """English word -> Zorbic word for ``LEXICON_SIZE`` common words (sorted, seed-determined).

    ``reserved`` (lowercase world names) are never used as Zorbic words.
    """
    rng = random.Random(f"zorbic-{seed}")
    names = vocab.NameMaker(rng, reserved)
    english = sorted(rng.sample(vocab.WORDS, LEXICON_SIZE))
    return {w: names.make(1, 2).lower() for w in english}


def pig_latin(word: str) -> str:
    """'string' -> 'ingstray', 'apple' -> 'appleway'."""
    if word[0] in "aeiou":
        return word + "way"
    i = next((k for k, ch in enumerate(word) if ch in "aeiou"), len(word))
    return word[i:] + word[:i] + "ay"


def caesar(word: str, shift: int = 1) -> str:
    """Shift each lowercase letter ``shift`` places forward in the alphabet (z wraps to a)."""
    return "".join(chr((ord(c) - 97 + shift) % 26 + 97) for c in word)


def _phrase(rng: random.Random, ctx: GenContext) -> tuple[str, str]:
    words = rng.sample(sorted(ctx.lexicon), rng.randint(1, 3))
    return " ".join(words), " ".join(ctx.lexicon[w] for w in words)


@fam(
    "pig_latin",
    ('Translate "{w}" into Pig Latin.', "What is {w} in Pig Latin?", "Pig Latin for {w}:"),
    "In Pig Latin, {w} is {answer}.",
)
def _pig_latin(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice(vocab.WORDS)
    ans = pig_latin(w)
    return Example({"w": w}, ans, make_options(rng, ans, [w + "ay", w[1:] + w[0], ans[:-2] + "way"]))


@fam(
    "caesar_shift",
    (
        'Encode "{w}" by shifting each letter one place forward.',
        "Apply a Caesar shift of one to {w}.",
        "Shift every letter of {w} by one (a->b, z->a).",
    ),
    "Shifted by one, {w} becomes {answer}.",
)
def _caesar(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice([w for w in vocab.WORDS if len(w) <= 5])
    ans = caesar(w)
    return Example({"w": w}, ans, make_options(rng, ans, [caesar(w, -1), caesar(w, 2), w]))


@fam(
    "english_to_zorbic",
    ("Translate into Zorbic: {e}", 'How do you say "{e}" in Zorbic?', "English: {e}\nZorbic:"),
    "In Zorbic, {e} is {answer}.",
)
def _en_zo(rng: random.Random, ctx: GenContext) -> Example:
    e, z = _phrase(rng, ctx)
    pool = [_phrase(rng, ctx)[1] for _ in range(4)] + [" ".join(z.split()[::-1])]
    return Example({"e": e}, z, make_options(rng, z, pool))


@fam(
    "zorbic_to_english",
    ("Translate from Zorbic to English: {z}", 'What does the Zorbic "{z}" mean?', "Zorbic: {z}\nEnglish:"),
    "The Zorbic words {z} mean {answer}.",
)
def _zo_en(rng: random.Random, ctx: GenContext) -> Example:
    e, z = _phrase(rng, ctx)
    pool = [_phrase(rng, ctx)[0] for _ in range(4)] + [" ".join(e.split()[::-1])]
    return Example({"z": z}, e, make_options(rng, e, pool))


@fam(
    "double_letters",
    ('Write "{w}" with every letter doubled.', "Double each letter of {w}.", "Stutter code for {w}:"),
    "{w} with doubled letters is {answer}.",
)
def _double(rng: random.Random, ctx: GenContext) -> Example:
    w = rng.choice([w for w in vocab.WORDS if len(w) <= 5])
    ans = "".join(c + c for c in w)
    return Example({"w": w}, ans, make_options(rng, ans, [w + w, "".join(c + c for c in w[::-1]), w]))
