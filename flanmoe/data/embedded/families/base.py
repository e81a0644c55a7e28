"""What an instruction family is: a generator of examples plus instruction templates and a plain form.

A family's ``generate(rng, ctx)`` returns an ``Example`` (template fields, the short answer and
answer options that contain it). ``templates`` are >= 3 instruction phrasings over the fields;
``plain`` states the same example as an instruction-free sentence for the pretraining corpus.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from flanmoe.data.embedded.world import World


@dataclass(frozen=True)
class Example:
    """One generated instance: ``fields`` fill the templates, ``answer`` is the target."""

    fields: dict[str, str]
    answer: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class GenContext:
    """What generators may use: the world, the Zorbic lexicon and the difficulty knobs."""

    world: World
    lexicon: dict[str, str]  # English word -> invented Zorbic word
    max_operand: int  # largest operand of arithmetic families
    list_len: int  # longest list in sequence families


Generator = Callable[[random.Random, GenContext], Example]


@dataclass(frozen=True)
class Family:
    """An instruction task family of the mixture."""

    name: str
    category: str
    templates: tuple[str, ...]
    plain: str
    generate: Generator

    def plain_text(self, ex: Example) -> str:
        """The example as a statement without instruction (corpus raw material)."""
        return self.plain.format(**ex.fields, answer=ex.answer)


def make_options(
    rng: random.Random, answer: str, pool: list[str] | tuple[str, ...], n: int = 4
) -> tuple[str, ...]:
    """``answer`` plus up to ``n - 1`` distinct distractors from ``pool``, shuffled."""
    others = sorted({p for p in pool if p != answer})
    opts = [answer] + rng.sample(others, min(n - 1, len(others)))
    rng.shuffle(opts)
    return tuple(opts)


def near_numbers(rng: random.Random, answer: int, n: int = 4) -> tuple[str, ...]:
    """``answer`` and ``n - 1`` nearby integers as options (off-by-one style distractors)."""
    pool = [str(answer + d) for d in (-10, -2, -1, 1, 2, 10)]
    return make_options(rng, str(answer), pool, n)


def registrar(registry: list[Family], category: str) -> Callable:
    """Decorator factory: ``@fam(name, templates, plain)`` registers a generator as a ``Family``."""

    def fam(name: str, templates: tuple[str, ...], plain: str) -> Callable[[Generator], Generator]:
        assert len(templates) >= 3, f"{name}: a family needs at least 3 templates"

        def wrap(gen: Generator) -> Generator:
            registry.append(Family(name, category, templates, plain, gen))
            return gen

        return wrap

    return fam
