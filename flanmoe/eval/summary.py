"""The summary of one suite's 0/1 results: per task and overall, the score with its bootstrap CI, the
chance level, the paper's normalized score (CI endpoints mapped), a best-constant baseline and
truncation counts; for generated answers, how many of the prompts that list options were answered with
one of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from flanmoe.eval.metrics import bootstrap_ci, exact_match, normalized_score
from flanmoe.eval.prompts import listed_options

if TYPE_CHECKING:
    from flanmoe.eval.suites import EvalSettings


def round6(x: float) -> float:
    return round(float(x), 6)


def _score_row(n: int, ci: tuple[float, float, float], chance: float) -> dict[str, Any]:
    """A score with its CI, chance level and normalized score (with the CI's endpoints mapped)."""
    score, lo, hi = ci
    return {
        "n": n,
        "score": score,
        "score_lo": lo,
        "score_hi": hi,
        "chance": chance,
        "normalized": normalized_score(score, chance),
        "normalized_lo": normalized_score(lo, chance),
        "normalized_hi": normalized_score(hi, chance),
    }


def summarize(
    correct: Mapping[str, Sequence[float]],
    chance: Mapping[str, float],
    baselines: Mapping[str, float],
    truncated: Mapping[str, int],
    settings: EvalSettings,
    average: Literal["tasks", "examples"] = "tasks",
    extra: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """Summary of per-task 0/1 results: per task and overall ``score`` (mean), ``score_lo/hi`` (CI),
    ``chance``, ``normalized`` (+ CI), ``best_constant``, ``n``, ``truncated``.

    ``average`` "tasks" is the mean of task means (BBH), "examples" the mean over every example
    (MMLU). ``extra`` adds other per-example measures (e.g. ``acc_mean``) as plain means.
    """
    b = {"n_resamples": settings.bootstrap, "confidence": settings.confidence, "seed": settings.seed}
    tasks: dict[str, Any] = {}
    for task, vals in correct.items():
        row = _score_row(len(vals), bootstrap_ci(list(vals), **b), chance[task])
        row.update(best_constant=baselines[task], truncated=truncated.get(task, 0))
        for name, per_task in (extra or {}).items():
            row[name] = sum(per_task[task]) / max(len(per_task[task]), 1)
        tasks[task] = {k: round6(v) if isinstance(v, float) else v for k, v in row.items()}
    n_all = sum(len(v) for v in correct.values())
    if average == "examples":
        pooled = [x for v in correct.values() for x in v]
        score, lo, hi = bootstrap_ci(pooled, **b)

        def weighted(key: str) -> float:
            return sum(tasks[t][key] * tasks[t]["n"] for t in tasks) / max(n_all, 1)
    else:
        score, lo, hi = bootstrap_ci({t: list(v) for t, v in correct.items()}, **b)

        def weighted(key: str) -> float:
            return sum(tasks[t][key] for t in tasks) / max(len(tasks), 1)

    overall = _score_row(n_all, (score, lo, hi), weighted("chance"))
    overall.update(best_constant=weighted("best_constant"), truncated=sum(truncated.values()))
    for name in extra or {}:
        overall[name] = weighted(name)
    overall = {k: round6(v) if isinstance(v, float) else v for k, v in overall.items()}
    return {**overall, "average": average, "tasks": tasks}


def options_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Format against skill, over the records whose prompt ends with an options block
    (``listed_options``): ``options_rows``, ``options_answered`` (the share whose generated answer is
    one of the options listed: the format learned) and ``options_exact_match``. Empty when no prompt
    lists options."""
    rows = [(r, o) for r in records if (o := listed_options(str(r["prompt"]))) is not None]
    if not rows:
        return {}
    generated = [str(r.get("generation", r["prediction"])) for r, _ in rows]  # not a rank-classified pick
    answered = [any(exact_match(g, x) for x in o) for g, (_, o) in zip(generated, rows, strict=True)]
    em = [exact_match(g, str(r["target"])) for g, (r, _) in zip(generated, rows, strict=True)]
    return {
        "options_rows": len(rows),
        "options_answered": round6(sum(answered) / len(rows)),
        "options_exact_match": round6(sum(em) / len(rows)),
    }


__all__ = ["options_summary", "round6", "summarize"]
