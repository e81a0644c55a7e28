"""Paired differences on the held-out people: two models answer the very same questions, so their
difference is measured question by question, not from two independent intervals.

Comparisons, per stratum ``people_x<N>`` and measure (``knowledge.MEASURES``):

- per arch, instruction-tuned minus pretrained only, for every measure;
- per MoE arch and its FLOPs-matched dense twin, MoE minus dense: storage and extraction after
  pretraining (``cloze``, ``qa``), extraction in the instruction format after IT (``mmlu``).

With one seed, a paired bootstrap over the questions (``power.paired_difference``); with several, the
t-interval of the per-seed paired differences (``power.paired_over_seeds``): the seed-to-seed spread, not
the question count, limits power there. Two models are paired over the seeds both have. Input: the evaluate stages' per-question records
(``evals/s<seed>/<arch>-<model>/predictions.jsonl``: ``suite``, ``mode``, ``task``, ``prompt``,
``correct``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flanmoe.report.heldout_pairs import Key, question_answers
from flanmoe.report.knowledge import MEASURES, STRATUM
from flanmoe.report.power import paired_over_seeds
from flanmoe.report.seeds import by_seed, shared_seeds
from flanmoe.report.stats import Estimate

# (measure, model stage) compared between a MoE arch and its dense twin
MOE_DENSE = (("cloze", "pretrain"), ("qa", "pretrain"), ("mmlu", "instruct"))
Records = Sequence[Mapping]  # one model's predictions.jsonl rows
Answers = dict[tuple[str, str], dict[Key, float]]  # (measure, stratum) -> {question: correct}


@dataclass(frozen=True)
class PairedRow:
    """``a`` minus ``b`` on ``measure`` (``a``, ``b``: ``arch/model`` names), per stratum."""

    a: str
    b: str
    measure: str
    cells: dict[str, Estimate]


def answers(records: Records, where: str = "predictions") -> Answers:
    """Correctness per question of the knowledge measures, per stratum: the held-out suites' parser
    (``heldout_pairs.question_answers``: a question is its prompt and its occurrence in the task; a
    row lacking a key raises ``ValueError`` naming ``where``), regrouped by measure."""
    per = question_answers(records, {section for _, section, _ in MEASURES}, where)
    out: Answers = {}
    for measure, section, mode in MEASURES:
        for task, questions in per.get((section, mode), {}).items():
            if STRATUM.fullmatch(task):
                out[(measure, task)] = questions
    return out


def _difference(
    a: Mapping[int, Answers], b: Mapping[int, Answers], key: tuple[str, str], seed: int
) -> Estimate | None:
    """a - b on ``key`` over the questions both answered, per seed both have; None when a seed has
    none (or they share no seed)."""
    per_seed = []
    for s in shared_seeds(a, b):
        qa, qb = a[s].get(key, {}), b[s].get(key, {})
        common = sorted(set(qa) & set(qb))
        if not common:
            return None
        per_seed.append((np.array([qa[q] for q in common]), np.array([qb[q] for q in common])))
    return paired_over_seeds(per_seed, seed=seed) if per_seed else None


def paired_rows(
    by_model: Mapping[str, Mapping[int, Records] | Sequence[Records]],
    archs: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    strata: Sequence[str],
    seed: int = 0,
) -> list[PairedRow]:
    """``by_model[f"{arch}-{model}"]``: that model's records per seed, ``{seed: records}`` (two models
    are paired over the seeds both have) or a list (every model the same seeds in the same order).
    Rows: IT - PT per arch and measure, then MoE - dense per pair (``MOE_DENSE``)."""
    ans = {
        name: {s: answers(r, f"records of {name}, seed {s}") for s, r in by_seed(seeds).items()}
        for name, seeds in by_model.items()
    }
    wanted = [(f"{a}-instruct", f"{a}-pretrain", m) for a in archs for m, _, _ in MEASURES]
    wanted += [(f"{moe}-{model}", f"{dense}-{model}", m) for moe, dense in pairs for m, model in MOE_DENSE]
    rows = []
    for a, b, measure in wanted:
        if a not in ans or b not in ans:
            continue
        cells = {}
        for s in strata:
            d = _difference(ans[a], ans[b], (measure, s), seed)
            if d is not None:
                cells[s] = d
        if cells:
            rows.append(PairedRow(a, b, measure, cells))
    return rows


__all__ = ["MOE_DENSE", "PairedRow", "answers", "paired_rows"]
