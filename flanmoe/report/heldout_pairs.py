"""Paired differences of the held-out normalized average (and of fine-tuned test scores), from the
evaluations' per-question records.

The findings compare models on the headline number, the normalized average of the held-out suites
(``flanmoe.grid.HELDOUT``: MMLU-style and BBH), zero- and few-shot: MoE minus its FLOPs-matched dense
twin, instruction-tuned minus pretrained only, and differences of those. Models of one seed answer the
very same questions, so a difference is measured question by question (``contrast``):

- a suite's score is its task means weighted as ``flanmoe.eval.suites.summarize`` weights them
  (``SUITE_AVERAGE``: MMLU by examples, i.e. task ``n_t / N``; BBH by tasks, ``1 / T``), its
  normalized score ``100 (score - chance) / (1 - chance)``, the normalized average the mean over the
  suites; every term of the contrast is linear in the per-question 0/1 results, so the contrast is
  a weighted mean of per-question differences and its point equals the difference of the metrics'
  normalized averages (the chance terms cancel);
- one seed: a bootstrap that resamples the questions within each task, jointly for every model
  (``power.paired_difference`` with weights), labelled ``paired bootstrap``;
- several seeds: the t-interval of the per-seed paired differences (``power.seed_interval``),
  labelled ``seed t``: the seed-to-seed spread, not the question count, limits power there. Two
  models are paired over the seeds both have (an arch of ``base.extra_archs`` has more than the
  others: dense vs switch pairs all of theirs, gshard vs st_moe ``base.seeds``).

The fine-tuning findings compare fine-tuned models (``(arch, task, scenario)``) on their raw test score
(suite ``finetune``, the mean over the test examples; value ``FINETUNE``) in the same way: the models
of one seed are scored on the same test split.

Where records are missing (older runs, a table built from metrics alone) or disagree with the metrics
(not the same questions, or their normalized average not the metrics' own), the caller falls back to
``stats.difference`` of the two intervals (MOVER), labelled ``independent (MOVER)``. Every comparison
carries its minimum detectable effect (``power.minimum_detectable_effect``, 80% power, alpha .05) and,
with a seed spread, the seeds a +-3-point interval would take (``power.seeds_needed``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from flanmoe.grid import HELDOUT
from flanmoe.report.power import (
    minimum_detectable_effect,
    paired_difference,
    paired_over_seeds,
    seeds_needed,
    std_error_of,
)
from flanmoe.report.seeds import by_seed, shared_seeds
from flanmoe.report.stats import Estimate

PAIRED, SEED_T, MOVER = "paired bootstrap", "seed t", "independent (MOVER)"
# how flanmoe/eval/suites.py averages each suite's tasks (finetune: a fine-tuned model's test split)
SUITE_AVERAGE = {"mmlu": "examples", "bbh": "tasks", "finetune": "examples"}
PAIRED_SUITES = (*HELDOUT, "finetune")
HALF_WIDTH = 3.0  # normalized points: the +- half-width ``seeds_for_3pt`` is computed for
TOLERANCE = 1e-3  # normalized points: records' normalized average vs the metrics' (rounded to 4 digits)
POWER_METHOD = (
    "The findings' differences of held-out normalized averages are paired where the evaluations'"
    " per-question records exist (evals/s<seed>/<arch>-<model>/predictions.jsonl): with one seed a"
    " bootstrap resampling the questions within each task jointly for both models (paired bootstrap),"
    " with several the t-interval of the per-seed paired differences (seed t); the fine-tuning claims'"
    " differences of test scores likewise; without records, the MOVER interval above (independent"
    " (MOVER)). Beside each difference: the"
    " minimum detectable effect (MDE: the smallest true difference a two-sided test at alpha .05"
    " detects with 80% power, (z_.975 + z_.8) x its standard error; t quantiles over seeds) and, with"
    " two or more seeds, the seeds a 95% CI of +-3 normalized points would take at the measured"
    " seed-to-seed SD of the paired differences."
)

Key = tuple[str, int]  # (prompt, occurrence of that prompt in its task): a question
Answers = dict[tuple[str, str], dict[str, dict[Key, float]]]  # (suite, mode) -> task -> {question: 0/1}
Model = tuple[str, ...]  # (arch, "pretrain" | "instruct") or a fine-tuned model (arch, task, scenario)
Suites = Mapping[str, tuple[float, float]]  # suite -> (chance, weight): value = sum weight (score - chance)
FINETUNE: Suites = {"finetune": (0.0, 1.0)}  # a fine-tuned model's value: its raw test score


def heldout_answers(records: Sequence[Mapping], where: str = "predictions") -> Answers:
    """The per-question results of the suites of ``PAIRED_SUITES`` in one model's records
    (``question_answers``)."""
    return question_answers(records, PAIRED_SUITES, where)


def question_answers(
    records: Sequence[Mapping], suites: Collection[str], where: str = "predictions"
) -> Answers:
    """The per-question results of ``suites`` in one model's records (``suite``, ``mode``, ``task``,
    ``prompt``, ``correct``); a prompt asked twice in a task is two questions. Raises ``ValueError``
    naming ``where`` and the row when such a row lacks one of those keys."""
    out: Answers = {}
    seen: dict[tuple, int] = {}  # (suite, mode, task, prompt) -> occurrences so far
    for i, r in enumerate(records):
        if r.get("suite") not in suites:
            continue
        missing = [k for k in ("mode", "task", "prompt", "correct") if k not in r]
        if missing:
            raise ValueError(f"{where}: row {i + 1} ({r['suite']}) lacks {', '.join(missing)}")
        task = out.setdefault((r["suite"], r["mode"]), {}).setdefault(str(r["task"]), {})
        where_in = (r["suite"], r["mode"], str(r["task"]), str(r["prompt"]))
        seen[where_in] = seen.get(where_in, -1) + 1
        task[(where_in[3], seen[where_in])] = float(r["correct"])
    return out


@dataclass(frozen=True)
class Paired:
    """A difference with how its interval was made (``interval``: ``PAIRED``, ``SEED_T`` or
    ``MOVER``), its standard error and, over seeds, the seed-to-seed SD of the paired differences."""

    estimate: Estimate
    interval: str
    std_error: float
    seeds: int = 1
    seed_sd: float | None = None
    half_width: float | None = HALF_WIDTH  # None: no seeds_for_3pt (fine-tuning scores are not points)

    @property
    def mde(self) -> float:
        """Minimum detectable effect (80% power, two-sided alpha .05)."""
        df = self.seeds - 1 if self.interval == SEED_T else None
        return minimum_detectable_effect(self.std_error, df=df)

    @property
    def seeds_for_3pt(self) -> int | None:
        """Seeds a 95% t-interval of +- ``half_width`` would take (None without a seed SD, or when it
        would take more than ``seeds_needed`` counts to)."""
        if self.seed_sd is None or self.half_width is None:
            return None
        try:
            return seeds_needed(self.seed_sd, self.half_width)
        except ValueError:  # more seeds than anyone would run
            return None


def mover(estimate: Estimate, seeds: int = 1) -> Paired:
    """A MOVER difference (``stats.difference``) as a ``Paired``: its standard error from its CI."""
    return Paired(estimate, MOVER, std_error_of(estimate), seeds)


def normalized_average(chance: Mapping[str, float]) -> Suites:
    """The normalized average over the suites of ``chance`` (``{suite: chance level}``) as ``Suites``:
    ``mean_s 100 (score_s - chance_s) / (1 - chance_s)``."""
    return {s: (c, 100.0 / (1.0 - c) / len(chance)) for s, c in chance.items()}


def _suite_score(tasks: Mapping[str, Mapping[Key, float]], suite: str) -> float:
    """A suite's score from its tasks' results, averaged as ``SUITE_AVERAGE`` says."""
    if SUITE_AVERAGE.get(suite, "tasks") == "examples":
        return sum(sum(q.values()) for q in tasks.values()) / sum(len(q) for q in tasks.values())
    return statistics.fmean(statistics.fmean(q.values()) for q in tasks.values())


def _value(seed: Answers, mode: str, suites: Suites) -> float:
    """One model's ``sum_s weight_s (score_s - chance_s)`` from its records (as the metrics compute it)."""
    return sum(w * (_suite_score(seed[(s, mode)], s) - c) for s, (c, w) in suites.items())


def _seed_groups(
    seeds: Mapping[Model, Answers], terms: Mapping[Model, float], mode: str, suites: Suites
) -> tuple[dict[str, tuple[list[float], list[float]]], dict[str, float]] | None:
    """The contrast's per-question values (as ``(contrast, zeros)`` pairs) and weights per
    ``suite/task`` of one seed; None when the models did not answer the same questions."""
    groups, weights = {}, {}
    for suite, (_, weight) in suites.items():
        per_model = [seeds[m].get((suite, mode)) for m in terms]
        if any(not t for t in per_model) or any(set(t) != set(per_model[0]) for t in per_model):
            return None
        tasks = sorted(per_model[0])
        total = sum(len(per_model[0][t]) for t in tasks)
        for task in tasks:
            keys = sorted(per_model[0][task])
            if any(set(t[task]) != set(keys) for t in per_model) or not keys:
                return None
            values = [
                sum(w * t[task][k] for w, t in zip(terms.values(), per_model, strict=True)) for k in keys
            ]
            share = len(keys) / total if SUITE_AVERAGE.get(suite, "tasks") == "examples" else 1 / len(tasks)
            groups[f"{suite}/{task}"] = (values, [0.0] * len(values))
            weights[f"{suite}/{task}"] = weight * share
    return groups, weights


def contrast(
    answers: Mapping[Model, Mapping[int, Answers] | Sequence[Answers]],
    terms: Mapping[Model, float],
    mode: str,
    suites: Suites,
    expected: Mapping[Model, float],
    seed: int = 0,
    tolerance: float = TOLERANCE,
    half_width: float | None = HALF_WIDTH,
) -> Paired | None:
    """``sum(coef x value of model)`` over ``terms`` (coefficients summing to 0, e.g.
    ``{(moe, "instruct"): 1, (dense, "instruct"): -1}``), paired question by question (module doc).

    ``answers[model]``: one ``heldout_answers`` per seed, ``{seed: answers}`` (the contrast runs over
    the seeds every model of ``terms`` has: an arch of ``base.extra_archs`` has more) or a list (every
    model the same seeds in the same order); ``suites``: what a model's value is
    (``normalized_average(chance)``, or ``FINETUNE``); ``expected``: each model's value in the metrics
    (mean over its own seeds); ``half_width``: for ``Paired.seeds_for_3pt``. None (the caller falls
    back to MOVER) when a model has no records, the models share no seed or did not answer the same
    questions, or a model's value from its records differs from ``expected`` by more than
    ``tolerance``."""
    if not suites or not terms or any(m not in answers for m in terms):
        return None
    per_model = {m: by_seed(answers[m]) for m in terms}
    positional = any(not isinstance(answers[m], Mapping) for m in terms)
    if positional and len({len(a) for a in per_model.values()}) > 1:
        return None  # a list per model: the same seeds for every model
    shared = shared_seeds(*per_model.values())
    n = len(shared)
    if n == 0:
        return None
    per_seed = []
    for i in shared:
        seeds = {m: per_model[m][i] for m in terms}
        if any((s, mode) not in seeds[m] for m in terms for s in suites):
            return None
        built = _seed_groups(seeds, terms, mode, suites)
        if built is None:
            return None
        per_seed.append(built)
    for m in terms:  # the records must be the metrics' own questions and results, over the model's seeds
        own = list(per_model[m].values())
        if any((s, mode) not in a for a in own for s in suites):
            return None
        if abs(statistics.fmean(_value(a, mode, suites) for a in own) - expected[m]) > tolerance:
            return None
    est = paired_over_seeds([g for g, _ in per_seed], seed, [w for _, w in per_seed])
    if n == 1:
        return Paired(est, PAIRED, std_error_of(est), half_width=half_width)
    sd = statistics.stdev(paired_difference(g, n_resamples=0, weights=w).value for g, w in per_seed)
    return Paired(est, SEED_T, sd / math.sqrt(n), n, sd, half_width)


__all__ = [
    "HALF_WIDTH",
    "FINETUNE",
    "PAIRED_SUITES",
    "Answers",
    "Model",
    "Suites",
    "MOVER",
    "PAIRED",
    "POWER_METHOD",
    "SEED_T",
    "SUITE_AVERAGE",
    "Paired",
    "contrast",
    "heldout_answers",
    "normalized_average",
    "mover",
]
