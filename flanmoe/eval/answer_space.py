"""The chance level of an exact-match task from its answer space, for data that brings none (real BBH).

The paper's normalized score puts a uniform guess at 0, so the chance level must be the score of a
uniform guess among the task's possible answers:

- ``options``: the input lists its options (an ``Options:`` block of ``(A) ...`` or ``- ...`` lines,
  inline ``(A) ... (B) ...`` after ``Options:``, or ``(A)``-style lines without a header): 1/k for an
  example with k options (date_understanding, logical_deduction, navigate, formal_fallacies);
- ``labels``: otherwise, a task whose targets take at most ``max_labels`` distinct values, each seen
  twice on average (True/False, Yes/No): 1/(distinct targets);
- ``free_form``: anything else (word_sorting, dyck_languages, multistep_arithmetic): 0.

A task's chance is the mean over its examples (the option count may vary from one example to the
next). Pure functions of the examples' text: nothing here reads files or models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_OPTIONS_HEADER = re.compile(r"\boptions\s*:", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*(?:\([A-Z]\)|-\s)\s*\S")  # "(A) 12/14/2026" or "- Yes"
_LETTER_LINE = re.compile(r"^\s*\([A-Z]\)\s*\S")
_INLINE_LETTER = re.compile(r"\(([A-Z])\)")


def option_count(text: str) -> int:
    """How many options ``text`` lists (0 when it lists fewer than two)."""
    headers = list(_OPTIONS_HEADER.finditer(text))
    if headers:
        tail = text[headers[-1].end() :]
        lines = sum(bool(_OPTION_LINE.match(line)) for line in tail.splitlines())
        if lines >= 2:
            return lines
        inline = len(set(_INLINE_LETTER.findall(tail)))
        if inline >= 2:
            return inline
    lines = sum(bool(_LETTER_LINE.match(line)) for line in text.splitlines())
    return lines if lines >= 2 else 0


def label_count(targets: Sequence[str], max_labels: int) -> int:
    """The number of distinct targets when they form a label set (2 to ``max_labels`` values, each seen
    twice on average: a handful of free-form answers is no label set), else 0."""
    k = len({str(t).strip() for t in targets})
    return k if 2 <= k <= max_labels and len(targets) >= 2 * k else 0


def task_chance(inputs: Sequence[str], targets: Sequence[str], max_labels: int) -> tuple[float, str]:
    """(chance, basis) of one task: the mean over ``inputs`` of 1/k, k the example's options, else the
    task's labels (from all its ``targets``), else 0; ``basis`` is ``options``, ``labels``,
    ``free_form``, or those its examples mix joined by ``+`` (e.g. ``labels+options``)."""
    labels = label_count(targets, max_labels)
    per_example: list[float] = []
    bases: set[str] = set()
    for text in inputs:
        k = option_count(text)
        if k:
            per_example.append(1.0 / k)
            bases.add("options")
        elif labels:
            per_example.append(1.0 / labels)
            bases.add("labels")
        else:
            per_example.append(0.0)
            bases.add("free_form")
    if not per_example:
        return 0.0, "free_form"
    return sum(per_example) / len(per_example), "+".join(sorted(bases))


__all__ = ["label_count", "option_count", "task_chance"]
