"""Held-out BBH-schema suite (``input``, ``target``): algorithmic BIG-Bench Hard tasks generated
exactly as the real tasks are defined, at modest difficulty (``steps`` sets the number of operations).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families.classification import BRACKETS, balanced_sequence
from flanmoe.data.embedded.families.sequences import random_date

BBH_COLUMNS = ("input", "target")
Generator = Callable[[random.Random, int], tuple[str, str]]


def balanced_answers(*answers: str) -> Callable[[Generator], Generator]:
    """Draw the answer uniformly first, then generate until it comes out: a constant guess scores chance."""

    def wrap(gen: Generator) -> Generator:
        def balanced(rng: random.Random, steps: int) -> tuple[str, str]:
            want = rng.choice(answers)
            while True:
                inp, tgt = gen(rng, steps)
                if tgt == want:
                    return inp, tgt

        balanced.__doc__ = gen.__doc__
        return balanced

    return wrap


@balanced_answers("True", "False")
def boolean_expressions(rng: random.Random, steps: int) -> tuple[str, str]:
    """'not ( True ) and ( True ) is' -> 'False' (Python precedence, as in BBH)."""

    def lit() -> str:
        s = rng.choice(("True", "False"))
        for _ in range(rng.choice((0, 0, 1, 2))):
            s = "not " + s
        return s

    expr = lit()
    for _ in range(steps):
        right = lit()
        if rng.random() < 0.3:
            right = f"( {right} )"
        expr = f"{expr} {rng.choice(('and', 'or'))} {right}"
        if rng.random() < 0.25:
            expr = f"( {expr} )"
    value = eval(expr, {"__builtins__": {}})  # only literals, and/or/not and parentheses we wrote
    return f"{expr} is", str(value)


def dyck_languages(rng: random.Random, steps: int) -> tuple[str, str]:
    """A prefix of a well-nested sequence; the target closes it."""
    while True:
        full = balanced_sequence(rng, steps + 1)
        cut = rng.randrange(1, len(full))
        stack: list[str] = []
        for b in full[:cut]:
            stack.append(b) if b in BRACKETS else stack.pop()
        if stack:
            break
    prompt = (
        "Complete the rest of the sequence, making sure that the parentheses are closed properly. Input: "
    )
    return prompt + " ".join(full[:cut]), " ".join(BRACKETS[b] for b in reversed(stack))


def word_sorting(rng: random.Random, steps: int) -> tuple[str, str]:
    """'Sort the following words alphabetically: List: oven costume' -> 'costume oven'."""
    words = rng.sample(vocab.WORDS, steps + 1)
    return "Sort the following words alphabetically: List: " + " ".join(words), " ".join(sorted(words))


def multistep_arithmetic_two(rng: random.Random, steps: int) -> tuple[str, str]:
    """'((-1 + 2) * (3 - -4)) =' -> '7' with single-digit operands, two groups of ``steps`` terms."""

    def group() -> str:
        terms = [str(rng.randint(-9, 9)) for _ in range(max(2, steps))]
        return "(" + "".join(t if i == 0 else f" {rng.choice('+-*')} {t}" for i, t in enumerate(terms)) + ")"

    expr = f"({group()} {rng.choice('+-*')} {group()})"
    return f"{expr} =", str(eval(expr, {"__builtins__": {}}))


_COUNT_CATEGORIES = {
    "instrument": "musical instruments",
    "fruit": "fruits",
    "vegetable": "vegetables",
    "animal": "animals",
}


def object_counting(rng: random.Random, steps: int) -> tuple[str, str]:
    """'I have a piano, two flutes, and a cat. How many musical instruments do I have?' -> '3'."""
    cat = rng.choice(sorted(_COUNT_CATEGORIES))
    others = [w for c in sorted(_COUNT_CATEGORIES) if c != cat for w in vocab.CATEGORIES[c]]
    targets = rng.sample(vocab.CATEGORIES[cat], rng.randint(1, steps + 1))
    distract = rng.sample(others, rng.randint(0, 2))
    items, total = [], 0
    for w in targets + distract:
        n = 1 if rng.random() < 0.7 else 2
        total += n if w in targets else 0
        items.append(vocab.fix_articles(f"a {w}") if n == 1 else f"two {vocab.plural(w)}")
    rng.shuffle(items)
    listing = items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]
    return f"I have {listing}. How many {_COUNT_CATEGORIES[cat]} do I have?", str(total)


@balanced_answers("Yes", "No")
def navigate(rng: random.Random, steps: int) -> tuple[str, str]:
    """Do the instructions return to the start? -> 'Yes' / 'No' (both BBH variants)."""
    back = rng.random() < 0.5
    head = "If you follow these instructions, do you return to the starting point?"
    if rng.random() < 0.5:  # variant 1: one axis, turn around
        moves = [rng.randint(1, 9) for _ in range(steps)]
        turn = rng.randrange(1, steps + 1)
        pos = sum(moves[:turn]) - sum(moves[turn:])
        last = pos if back and pos > 0 else rng.randint(1, 9)  # a final step back to the start, or not
        moves.append(last)
        ok = sum(moves[:turn]) - sum(moves[turn:]) == 0
        words = [f"Take {m} step{'s' if m > 1 else ''}." for m in moves]
        words.insert(turn, "Turn around.")
        body = " ".join(words)
    else:  # variant 2: always face forward, four directions
        dirs = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}
        moves = [(rng.randint(1, 9), rng.choice(sorted(dirs))) for _ in range(steps)]
        x = sum(n * dirs[d][0] for n, d in moves)
        y = sum(n * dirs[d][1] for n, d in moves)
        if back:
            if x:
                moves.append((abs(x), "left" if x > 0 else "right"))
            if y:
                moves.append((abs(y), "backward" if y > 0 else "forward"))
        x = sum(n * dirs[d][0] for n, d in moves)
        y = sum(n * dirs[d][1] for n, d in moves)
        ok = x == 0 and y == 0
        body = "Always face forward. " + " ".join(
            f"Take {n} step{'s' if n > 1 else ''} {d}." for n, d in moves
        )
    return f"{head} {body}\nOptions:\n- Yes\n- No", "Yes" if ok else "No"


_DATE_OFFSETS = (
    ("tomorrow", 1),
    ("yesterday", -1),
    ("one week from today", 7),
    ("one week ago", -7),
    ("10 days ago", -10),
    ("24 hours later", 1),
    ("one day before today", -1),
    ("3 days later", 3),
)
LETTERS = "ABCDEF"


def date_understanding(rng: random.Random, steps: int) -> tuple[str, str]:
    """'Today is 09/07/2021. What is the date tomorrow in MM/DD/YYYY?' with (A)-(E) options."""
    today = random_date(rng)
    phrase, delta = rng.choice(_DATE_OFFSETS)
    ans = today + dt.timedelta(days=delta)
    fmt = "%m/%d/%Y"
    cands = [
        ans - dt.timedelta(days=2 * delta),
        ans + dt.timedelta(days=1),
        ans - dt.timedelta(days=365),
        ans + dt.timedelta(days=30),
        today,
    ]
    wrong = sorted({c.strftime(fmt) for c in cands} - {ans.strftime(fmt)})
    opts = [ans.strftime(fmt)] + rng.sample(wrong, min(4, len(wrong)))
    rng.shuffle(opts)
    stated = (
        today.strftime(fmt)
        if rng.random() < 0.6
        else f"{vocab.MONTHS[today.month - 1]} {today.day}, {today.year}"
    )
    lines = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(opts))
    q = f"Today is {stated}. What is the date {phrase} in MM/DD/YYYY?\nOptions:\n{lines}"
    return q, f"({LETTERS[opts.index(ans.strftime(fmt))]})"


_TRACK_VARIANTS = (
    (
        "playing a game",
        "they are each holding a ball",
        "has a {x} ball",
        "pairs of players trade balls",
        "swap balls",
        "has the",
        "{x} ball",
        vocab.COLORS,
    ),
    (
        "friends and avid readers who occasionally trade books",
        "they are each holding a new book",
        "gets {x}",
        "they swap books",
        "swap books",
        "has",
        "{x}",
        ("Frankenstein", "Ulysses", "Moby Dick", "Hamlet", "Dracula", "Emma", "Lolita", "The Odyssey"),
    ),
    (
        "dancers at a square dance",
        "they are each dancing with a partner",
        "is dancing with {x}",
        "the dancers often trade partners",
        "switch partners",
        "is dancing with",
        "{x}",
        ("Helga", "Ophelia", "Rodrigo", "Jamie", "Melissa", "Karl", "Sam", "Izzi"),
    ),
)


def tracking_shuffled_objects_three_objects(rng: random.Random, steps: int) -> tuple[str, str]:
    """Alice, Bob and Claire trade objects three times; who holds what at the end -> '(A)'."""
    people = ["Alice", "Bob", "Claire"]
    setting, holding, has, trade, swap, end, fmt, pool = rng.choice(_TRACK_VARIANTS)
    objs = rng.sample(pool, 3)
    held = dict(zip(people, objs, strict=True))
    start = ", ".join(f"{p} {has.format(x=o)}" for p, o in zip(people[:2], objs, strict=False))
    start = vocab.fix_articles(start + f", and Claire {has.format(x=objs[2])}")
    swaps = []
    for _ in range(3):  # the real task always has three swaps
        a, b = rng.sample(people, 2)
        held[a], held[b] = held[b], held[a]
        swaps.append(f"{a} and {b} {swap}")
    who = rng.choice(people)
    text = (
        f"Alice, Bob, and Claire are {setting}. At the start of the game, {holding}: {start}.\n"
        f"As the game progresses, {trade}. First, {swaps[0]}. Then, {swaps[1]}. Finally, {swaps[2]}. "
        f"At the end of the game, {who} {end}\nOptions:\n"
        + "\n".join(f"({LETTERS[i]}) {fmt.format(x=o)}" for i, o in enumerate(objs))
    )
    return text, f"({LETTERS[objs.index(held[who])]})"


BBH_TASKS: dict[str, Generator] = {
    "boolean_expressions": boolean_expressions,
    "date_understanding": date_understanding,
    "dyck_languages": dyck_languages,
    "multistep_arithmetic_two": multistep_arithmetic_two,
    "navigate": navigate,
    "object_counting": object_counting,
    "tracking_shuffled_objects_three_objects": tracking_shuffled_objects_three_objects,
    "word_sorting": word_sorting,
}


def build_bbh(seed: int, per_task: int, steps: int) -> dict[str, dict[str, list[str]]]:
    """Task name -> BBH columns with ``per_task`` distinct inputs (fewer only if the task runs out)."""
    out = {}
    for name, gen in BBH_TASKS.items():
        rng = random.Random(f"bbh-{seed}-{name}")
        rows: dict[str, str] = {}
        for _ in range(per_task * 20):
            inp, tgt = gen(rng, steps)
            rows.setdefault(inp, tgt)
            if len(rows) == per_task:
                break
        out[name] = {"input": list(rows), "target": list(rows.values())}
    return out
