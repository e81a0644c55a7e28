"""Render instruction families into FLAN-schema rows (zero-/few-shot, with/without options)."""

from __future__ import annotations

import random

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.families import FAMILIES, Example, Family, GenContext

TEMPLATE_TYPES = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")
FLAN_COLUMNS = ("inputs", "targets", "task_source", "task_name", "template_type")
TASK_SOURCE = "Embedded"


def render_input(template: str, ex: Example, with_options: bool) -> str:
    """One instruction: the template filled with the example, then FLAN's OPTIONS block if asked."""
    text = vocab.fix_articles(template.format(**ex.fields))
    if with_options:
        text += "\n\nOPTIONS:\n- " + "\n- ".join(ex.options)
    return text


def render_fewshot(template: str, shots: list[Example], query: Example, with_options: bool) -> str:
    """FLAN few-shot layout: ``input\\ntarget`` per exemplar, blank lines between, then the query."""
    parts = [f"{render_input(template, s, with_options)}\n{s.answer}" for s in shots]
    return "\n\n".join(parts + [render_input(template, query, with_options)])


def family_rows(
    fam: Family, ctx: GenContext, seed: int, n: int, k: int, fewshot_fraction: float, options_fraction: float
) -> list[dict[str, str]]:
    """``n`` FLAN rows of one family; each row draws its template and template type at random."""
    rng = random.Random(f"flan-{seed}-{fam.name}")
    rows = []
    for _ in range(n):
        template = rng.choice(fam.templates)
        fewshot = rng.random() < fewshot_fraction
        with_opt = rng.random() < options_fraction
        ex = fam.generate(rng, ctx)
        if fewshot:
            shots = [fam.generate(rng, ctx) for _ in range(k)]
            inputs = render_fewshot(template, shots, ex, with_opt)
        else:
            inputs = render_input(template, ex, with_opt)
        ttype = ("fs_" if fewshot else "zs_") + ("opt" if with_opt else "noopt")
        rows.append(
            {
                "inputs": inputs,
                "targets": ex.answer,
                "task_source": TASK_SOURCE,
                "task_name": fam.name,
                "template_type": ttype,
            }
        )
    return rows


def build_mixture(
    ctx: GenContext, seed: int, per_family: int, k: int, fewshot_fraction: float, options_fraction: float
) -> dict[str, list[str]]:
    """The whole instruction mixture as FLAN columns, rows shuffled across families."""
    rows = []
    for fam in FAMILIES:
        rows += family_rows(fam, ctx, seed, per_family, k, fewshot_fraction, options_fraction)
    random.Random(f"flan-order-{seed}").shuffle(rows)
    return {c: [r[c] for r in rows] for c in FLAN_COLUMNS}
