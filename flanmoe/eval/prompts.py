"""Prompts of the evaluation suites, in the layouts the instruction mixture teaches.

Multiple choice (MMLU schema: ``question``, ``choices``, ``answer``), format ``options`` (default):
FLAN's ``OPTIONS:`` block, each candidate scored is an option's text::

    Which instrument does Kim Mumea play?

    OPTIONS:
    - violin
    - flute

Format ``letters``: BBH's ``Options:`` block of ``(A) text`` lines, candidates ``(A)``, ``(B)``, ...;
format ``question``: the question alone, candidates the option texts (classic rank classification).

Few-shot (FLAN's layout, as in the mixture's ``fs_*`` templates): each exemplar is its prompt, a
newline and its answer; exemplars and the query are separated by a blank line. When the encoded
prompt is longer than the model's input length, whole exemplars are dropped from the left until it
fits (the query is never cut unless it alone is too long: then its tokens are cut from the left);
either way the example is counted as truncated.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MCFormat = Literal["options", "letters", "question"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mc_prompt(question: str, choices: Sequence[str], fmt: MCFormat) -> str:
    """The zero-shot prompt of one multiple-choice question."""
    question = question.strip()
    if fmt == "options":
        return question + "\n\nOPTIONS:\n- " + "\n- ".join(choices)
    if fmt == "letters":
        return question + "\nOptions:\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    if fmt == "question":
        return question
    raise ValueError(f"mmlu_format: unknown format {fmt!r}")


def mc_candidates(choices: Sequence[str], fmt: MCFormat) -> list[str]:
    """The answer strings scored for each option (the option text, or its letter ``(A)``)."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"choices: {len(choices)} options; at most {len(LETTERS)} can be lettered")
    if fmt == "letters":
        return [f"({LETTERS[i]})" for i in range(len(choices))]
    return list(choices)


def listed_options(prompt: str) -> list[str] | None:
    """The answers the last options block of ``prompt`` offers, as ``mc_prompt`` and the mixture write
    them: the texts of FLAN's ``OPTIONS:`` block of ``- text`` lines, or the letters ``(A)``, ``(B)``,
    ... of an ``Options:`` block of ``(A) text`` lines. None when the prompt ends without one (free-form)."""
    dash, letter = prompt.rfind("\nOPTIONS:\n"), prompt.rfind("\nOptions:\n")
    if dash < 0 and letter < 0:
        return None
    start = max(dash, letter)
    lines = prompt[start:].split("\n")[2:]
    if dash > letter:
        found = list(itertools.takewhile(lambda line: line.startswith("- "), lines))
        offered = [line[2:] for line in found]
    else:
        found = list(itertools.takewhile(lambda line: re.match(r"\([A-Z]\) ", line), lines))
        offered = [line[:3] for line in found]
    # the block must close the prompt (an exemplar's block is followed by its answer and the query)
    return offered if offered and not "".join(lines[len(found) :]).strip() else None


def exemplar(prompt: str, answer: str) -> str:
    """One few-shot exemplar: its prompt, a newline, its answer."""
    return f"{prompt}\n{answer}"


def join_fewshot(exemplars: Sequence[str], query: str) -> str:
    """Exemplars then the query, separated by blank lines (no exemplars: the query alone)."""
    return "\n\n".join([*exemplars, query])


@dataclass
class Encoded:
    """A prompt's token ids (ending with eos), the exemplars kept and whether anything was cut."""

    ids: list[int]
    shots: int
    truncated: bool


def encode_prompts(
    encode,
    queries: Sequence[str],
    exemplars: Sequence[Sequence[str]] | None,
    max_length: int,
) -> list[Encoded]:
    """Encode ``query`` i with its ``exemplars[i]`` under ``max_length`` tokens (module docstring).

    ``encode`` maps a list of texts to lists of ids (each ending with eos), e.g. a tokenizer's batch
    encode with ``encode_special_tokens=True``, the way the tokenize stage encodes.
    """
    if max_length < 2:
        raise ValueError(f"max_input_length: {max_length} must be >= 2")
    shots = [list(e) for e in exemplars] if exemplars is not None else [[] for _ in queries]
    out: list[Encoded | None] = [None] * len(queries)
    kept = [len(s) for s in shots]
    pending = list(range(len(queries)))
    while pending:
        ids = encode([join_fewshot(shots[i][len(shots[i]) - kept[i] :], queries[i]) for i in pending])
        again = []
        for i, seq in zip(pending, ids, strict=True):
            if len(seq) <= max_length:
                out[i] = Encoded(seq, kept[i], kept[i] < len(shots[i]))
            elif kept[i] > 0:
                kept[i] -= 1  # drop the leftmost exemplar still kept
                again.append(i)
            else:  # the query alone is too long: keep its last tokens (eos included)
                out[i] = Encoded(seq[-max_length:], 0, True)
        pending = again
    return out  # type: ignore[return-value]


__all__ = [
    "LETTERS",
    "Encoded",
    "MCFormat",
    "encode_prompts",
    "exemplar",
    "join_fewshot",
    "listed_options",
    "mc_candidates",
    "mc_prompt",
]
