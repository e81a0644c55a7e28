"""Arithmetic over small integers (category ``arithmetic``); ``ctx.max_operand`` sets the range."""

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
fam = registrar(FAMILIES, "arithmetic")


def _signed(rng: random.Random, m: int) -> int:
    # a quarter of operands negative: BBH-style arithmetic has negative numbers
    return rng.randint(0, m) * (-1 if rng.random() < 0.25 else 1)


@fam(
    "addition",
    ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute the sum: {a} + {b} =", "{a} + {b} equals what?"),
    "{a} + {b} = {answer}",
)
def _addition(rng: random.Random, ctx: GenContext) -> Example:
    a, b = _signed(rng, ctx.max_operand), _signed(rng, ctx.max_operand)
    return Example({"a": str(a), "b": str(b)}, str(a + b), near_numbers(rng, a + b))


@fam(
    "subtraction",
    ("What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute: {a} - {b} ="),
    "{a} - {b} = {answer}",
)
def _subtraction(rng: random.Random, ctx: GenContext) -> Example:
    a, b = _signed(rng, ctx.max_operand), _signed(rng, ctx.max_operand)
    return Example({"a": str(a), "b": str(b)}, str(a - b), near_numbers(rng, a - b))


@fam(
    "multiplication",
    ("What is {a} times {b}?", "Multiply {a} by {b}.", "Compute the product: {a} * {b} ="),
    "{a} * {b} = {answer}",
)
def _multiplication(rng: random.Random, ctx: GenContext) -> Example:
    m = max(3, ctx.max_operand // 2)
    a, b = _signed(rng, m), rng.randint(0, 9)
    return Example({"a": str(a), "b": str(b)}, str(a * b), near_numbers(rng, a * b))


@fam(
    "three_term_sum",
    (
        "Compute {a} {op1} {b} {op2} {c}.",
        "What is {a} {op1} {b} {op2} {c}?",
        "Evaluate the expression {a} {op1} {b} {op2} {c}.",
    ),
    "{a} {op1} {b} {op2} {c} = {answer}",
)
def _three_term(rng: random.Random, ctx: GenContext) -> Example:
    a, b, c = (rng.randint(0, ctx.max_operand) for _ in range(3))
    op1, op2 = rng.choice("+-"), rng.choice("+-")
    val = a + (b if op1 == "+" else -b) + (c if op2 == "+" else -c)
    return Example(
        {"a": str(a), "b": str(b), "c": str(c), "op1": op1, "op2": op2}, str(val), near_numbers(rng, val)
    )


@fam(
    "compare_numbers",
    (
        "Which is larger, {a} or {b}?",
        "Pick the bigger number: {a}, {b}.",
        "Of {a} and {b}, which number is greater?",
    ),
    "Of {a} and {b}, the larger is {answer}.",
)
def _compare(rng: random.Random, ctx: GenContext) -> Example:
    a, b = rng.sample(range(-ctx.max_operand, 5 * ctx.max_operand), 2)
    return Example({"a": str(a), "b": str(b)}, str(max(a, b)), (str(a), str(b)))


@fam(
    "next_number",
    ("What number comes after {a}?", "What is the successor of {a}?", "Count on by one from {a}."),
    "After {a} comes {answer}.",
)
def _next_number(rng: random.Random, ctx: GenContext) -> Example:
    a = rng.randint(-ctx.max_operand, 10 * ctx.max_operand)
    return Example({"a": str(a)}, str(a + 1), near_numbers(rng, a + 1))


@fam(
    "parity",
    ("Is {a} even or odd?", "Tell whether {a} is an even or an odd number.", "{a}: even or odd?"),
    "{a} is {answer}.",
)
def _parity(rng: random.Random, ctx: GenContext) -> Example:
    a = rng.randint(0, 10 * ctx.max_operand)
    return Example({"a": str(a)}, "even" if a % 2 == 0 else "odd", ("even", "odd"))


@fam(
    "number_to_words",
    ("Write {a} in words.", "How do you spell the number {a}?", "Spell out {a}."),
    "The number {a} is written {answer}.",
)
def _number_words(rng: random.Random, ctx: GenContext) -> Example:
    a = rng.randint(0, 99)
    pool = [vocab.number_to_words(x) for x in (a - 1, a + 1, a + 10, a - 10) if 0 <= x < 100]
    return Example({"a": str(a)}, vocab.number_to_words(a), make_options(rng, vocab.number_to_words(a), pool))
