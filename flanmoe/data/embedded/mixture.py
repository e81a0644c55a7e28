"""Render instruction families into FLAN-schema rows (zero-/few-shot, with/without options)."""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families import FAMILIES, Example, Family, GenContext

TEMPLATE_TYPES = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")
FLAN_COLUMNS = ("inputs", "targets", "task_source", "task_name", "template_type")
TASK_SOURCE = "Embedded"


OPTION_STYLES = ("none", "dash", "letter")
LETTERS = "ABCDEFGH"


def render(template: str, ex: Example, style: str) -> tuple[str, str]:
    """One instruction and its target.

    ``style``: ``none`` (no options), ``dash`` (FLAN's ``OPTIONS:`` block of ``- option`` lines,
    target the answer text) or ``letter`` (``Options:`` with ``(A) option`` lines, target the
    letter ``(A)``, as in BBH's multiple-choice tasks).
    """
    text = vocab.fix_articles(template.format(**ex.fields))
    if style == "dash":
        return text + "\n\nOPTIONS:\n- " + "\n- ".join(ex.options), ex.answer
    if style == "letter":
        lines = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(ex.options))
        return f"{text}\nOptions:\n{lines}", f"({LETTERS[ex.options.index(ex.answer)]})"
    return text, ex.answer


def render_fewshot(template: str, shots: list[Example], query: Example, style: str) -> tuple[str, str]:
    """FLAN few-shot layout: ``input\\ntarget`` per exemplar, blank lines between, then the query."""
    parts = ["\n".join(render(template, s, style)) for s in shots]
    inputs, target = render(template, query, style)
    return "\n\n".join(parts + [inputs]), target


def family_rows(
    fam: Family,
    ctx: GenContext,
    seed: int,
    n: int,
    k: int,
    fewshot_fraction: float,
    options_fraction: float,
    letter_fraction: float,
) -> list[dict[str, str]]:
    """``n`` FLAN rows of one family; each row draws its template, template type and option style."""
    rng = random.Random(f"flan-{seed}-{fam.name}")
    rows = []
    for _ in range(n):
        template = rng.choice(fam.templates)
        fewshot = rng.random() < fewshot_fraction
        with_opt = rng.random() < options_fraction
        style = ("letter" if rng.random() < letter_fraction else "dash") if with_opt else "none"
        ex = fam.generate(rng, ctx)
        if fewshot:
            shots = [fam.generate(rng, ctx) for _ in range(k)]
            inputs, target = render_fewshot(template, shots, ex, style)
        else:
            inputs, target = render(template, ex, style)
        ttype = ("fs_" if fewshot else "zs_") + ("opt" if with_opt else "noopt")
        rows.append(
            {
                "inputs": inputs,
                "targets": target,
                "task_source": TASK_SOURCE,
                "task_name": fam.name,
                "template_type": ttype,
            }
        )
    return rows


def build_mixture(
    ctx: GenContext,
    seed: int,
    per_family: int,
    k: int,
    fewshot_fraction: float,
    options_fraction: float,
    letter_fraction: float,
    rows_of: dict[str, int] | None = None,
) -> dict[str, list[str]]:
    """The whole instruction mixture as FLAN columns, rows shuffled across families; ``rows_of``
    gives some families another number of rows than ``per_family``."""
    rows = []
    for fam in FAMILIES:
        n = (rows_of or {}).get(fam.name, per_family)
        rows += family_rows(fam, ctx, seed, n, k, fewshot_fraction, options_fraction, letter_fraction)
    random.Random(f"flan-order-{seed}").shuffle(rows)
    return {c: [r[c] for r in rows] for c in FLAN_COLUMNS}
