"""List and sequence transformations (category ``sequence_transformation``) and calendar skills
(category ``calendar``); ``ctx.list_len`` bounds list lengths."""

from __future__ import annotations

import datetime as dt
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
from flanmoe.data.embedded.families.classification import BRACKETS

FAMILIES: list[Family] = []
fam = registrar(FAMILIES, "sequence_transformation")
cal = registrar(FAMILIES, "calendar")


def _numbers(rng: random.Random, ctx: GenContext) -> list[int]:
    return rng.sample(range(0, 5 * ctx.max_operand), rng.randint(3, max(3, ctx.list_len)))


def _items(rng: random.Random, ctx: GenContext) -> list[str]:
    return rng.sample(vocab.WORDS, rng.randint(3, max(3, ctx.list_len)))


def _shuffles(rng: random.Random, items: list[str], answer: str) -> tuple[str, ...]:
    pool = []
    for _ in range(6):
        p = list(items)
        rng.shuffle(p)
        pool.append(" ".join(p))
    return make_options(rng, answer, pool)


@fam(
    "list_reverse",
    ("Reverse the list: {l}", "Write these items in reverse order: {l}", "List: {l}\nReversed:"),
    "The list {l} reversed is {answer}.",
)
def _list_reverse(rng: random.Random, ctx: GenContext) -> Example:
    items = _items(rng, ctx)
    ans = " ".join(items[::-1])
    return Example({"l": " ".join(items)}, ans, _shuffles(rng, items, ans))


@fam(
    "sort_numbers",
    (
        "Sort these numbers from smallest to largest: {l}",
        "Put in ascending order: {l}",
        "Numbers: {l}\nSorted:",
    ),
    "{l} sorted is {answer}.",
)
def _sort_numbers(rng: random.Random, ctx: GenContext) -> Example:
    nums = _numbers(rng, ctx)
    ans = " ".join(str(n) for n in sorted(nums))
    return Example({"l": " ".join(map(str, nums))}, ans, _shuffles(rng, [str(n) for n in nums], ans))


@fam(
    "list_max",
    ("What is the largest number in: {l}?", "Find the maximum of {l}.", "Numbers: {l}\nLargest:"),
    "The largest of {l} is {answer}.",
)
def _list_max(rng: random.Random, ctx: GenContext) -> Example:
    nums = _numbers(rng, ctx)
    return Example(
        {"l": " ".join(map(str, nums))},
        str(max(nums)),
        make_options(rng, str(max(nums)), list(map(str, nums))),
    )


@fam(
    "list_min",
    ("What is the smallest number in: {l}?", "Find the minimum of {l}.", "Numbers: {l}\nSmallest:"),
    "The smallest of {l} is {answer}.",
)
def _list_min(rng: random.Random, ctx: GenContext) -> Example:
    nums = _numbers(rng, ctx)
    return Example(
        {"l": " ".join(map(str, nums))},
        str(min(nums)),
        make_options(rng, str(min(nums)), list(map(str, nums))),
    )


@fam(
    "continue_sequence",
    ("What comes next: {l}, ?", "Continue the pattern: {l}", "Sequence: {l}\nNext number:"),
    "After {l} comes {answer}.",
)
def _progression(rng: random.Random, ctx: GenContext) -> Example:
    start, step = rng.randint(0, ctx.max_operand), rng.choice((1, 2, 3, 5, 10, -1, -2))
    seq = [start + i * step for i in range(4)]
    return Example(
        {"l": ", ".join(map(str, seq))}, str(start + 4 * step), near_numbers(rng, start + 4 * step)
    )


@fam(
    "swap_items",
    (
        "List: {l}\nSwap the {i} and the {j} item. What is the list now?",
        "Exchange the {i} and {j} items of {l}.",
        "In the list {l}, swap positions {i} and {j}.",
    ),
    "Swapping the {i} and {j} items of {l} gives {answer}.",
)
def _swap(rng: random.Random, ctx: GenContext) -> Example:
    items = rng.sample(vocab.WORDS, 3)
    i, j = sorted(rng.sample(range(3), 2))
    out = list(items)
    out[i], out[j] = out[j], out[i]
    ords = ("first", "second", "third")
    ans = " ".join(out)
    return Example({"l": " ".join(items), "i": ords[i], "j": ords[j]}, ans, _shuffles(rng, items, ans))


@fam(
    "close_bracket",
    (
        "Which bracket closes the last open bracket in: {s}",
        "Open brackets: {s}\nNext closing bracket:",
        "What is the matching bracket for the innermost open one in {s}?",
    ),
    "In {s} the next closing bracket is {answer}.",
)
def _close_bracket(rng: random.Random, ctx: GenContext) -> Example:
    opened = [rng.choice(list(BRACKETS)) for _ in range(rng.randint(1, 4))]
    ans = BRACKETS[opened[-1]]
    return Example({"s": " ".join(opened)}, ans, tuple(BRACKETS.values()))


@fam(
    "count_items",
    ("How many items are in this list: {l}?", "Count the things: {l}", "List: {l}\nNumber of items:"),
    "The list {l} has {answer} items.",
)
def _count_items(rng: random.Random, ctx: GenContext) -> Example:
    items = rng.sample(vocab.WORDS, rng.randint(1, ctx.list_len + 2))
    return Example({"l": ", ".join(items)}, str(len(items)), near_numbers(rng, len(items)))


@fam(
    "position_tracking",
    (
        "You start at 0. {m} Where are you now?",
        "Start at position 0. {m} Final position?",
        "{m} If you began at zero, where do you end?",
    ),
    "Starting at 0: {m} You end at {answer}.",
)
def _position(rng: random.Random, ctx: GenContext) -> Example:
    pos, moves = 0, []
    for _ in range(rng.randint(1, 3)):
        n = rng.randint(1, 9)
        fwd = rng.random() < 0.5
        pos += n if fwd else -n
        moves.append(f"Move {n} {'forward' if fwd else 'back'}.")
    return Example({"m": " ".join(moves)}, str(pos), near_numbers(rng, pos))


@cal(
    "weekday_shift",
    (
        "Today is {d}. What day is it in {n} days?",
        "If it is {d} now, which day is {n} days later?",
        "{n} days after {d} is what day?",
    ),
    "{n} days after {d} comes {answer}.",
)
def _weekday(rng: random.Random, ctx: GenContext) -> Example:
    i, n = rng.randrange(7), rng.randint(2, 6)
    ans = vocab.WEEKDAYS[(i + n) % 7]
    return Example({"d": vocab.WEEKDAYS[i], "n": str(n)}, ans, make_options(rng, ans, vocab.WEEKDAYS))


def random_date(rng: random.Random) -> dt.date:
    """A date between 1990 and 2029."""
    return dt.date(1990, 1, 1) + dt.timedelta(days=rng.randrange(40 * 365))


@cal(
    "date_format",
    (
        "Write {d} in MM/DD/YYYY format.",
        "Convert the date {d} to month/day/year.",
        "Date: {d}\nAs MM/DD/YYYY:",
    ),
    "{d} is {answer}.",
)
def _date_format(rng: random.Random, ctx: GenContext) -> Example:
    d = random_date(rng)
    ans = d.strftime("%m/%d/%Y")
    pool = [d.strftime("%d/%m/%Y"), (d + dt.timedelta(days=1)).strftime("%m/%d/%Y"), d.strftime("%m/%d/%y")]
    return Example({"d": d.isoformat()}, ans, make_options(rng, ans, pool))


@cal(
    "date_add_days",
    ("What date is {n} days after {d}?", "Add {n} days to {d}.", "{d} plus {n} days is which date?"),
    "{n} days after {d} is {answer}.",
)
def _date_add(rng: random.Random, ctx: GenContext) -> Example:
    d, n = random_date(rng), rng.randint(2, 10)
    ans = (d + dt.timedelta(days=n)).isoformat()
    pool = [(d + dt.timedelta(days=n + k)).isoformat() for k in (-2, -1, 1, 2)]
    return Example({"d": d.isoformat(), "n": str(n)}, ans, make_options(rng, ans, pool))


@cal(
    "month_after",
    ("Which month comes after {m}?", "What month follows {m}?", "Name the month after {m}."),
    "After {m} comes {answer}.",
)
def _month_after(rng: random.Random, ctx: GenContext) -> Example:
    i = rng.randrange(12)
    ans = vocab.MONTHS[(i + 1) % 12]
    return Example({"m": vocab.MONTHS[i]}, ans, make_options(rng, ans, vocab.MONTHS))
