"""The headline scores of evaluate metrics, one row per model (the Prefect flow's summary of a run): per
section (the normalized average, MMLU, BBH, the held-in tasks, a fine-tuned task) and mode, the score
with its 95% CI and the best-constant baseline, in the report's number formats.

Pure functions over ``(model name, evaluate metrics dict)`` pairs; where they come from is the caller's
business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flanmoe.grid import MODES, SUITES
from flanmoe.report.render import md_table
from flanmoe.report.stats import Estimate, fmt_points, fmt_score
from flanmoe.report.table import AVERAGE

SECTIONS = (AVERAGE, *SUITES, "finetune")  # the sections of evaluate metrics with a score
Models = Sequence[tuple[str, Mapping[str, Any]]]


def _cell(metrics: Mapping[str, Any], section: str, mode: str) -> Mapping[str, Any] | None:
    cell = (metrics.get(section) or {}).get(mode)
    if isinstance(cell, Mapping) and isinstance(cell.get("score"), int | float):
        return cell
    return None


def score_columns(models: Models) -> list[tuple[str, str]]:
    """The (section, mode) pairs some model has a score for, sections in ``SECTIONS`` order."""
    return [(s, m) for s in SECTIONS for m in MODES if any(_cell(d, s, m) for _, d in models)]


def column_label(column: tuple[str, str]) -> str:
    """``mmlu few-shot``."""
    return f"{column[0]} {column[1].replace('_', '-')}"


def score_records(models: Models) -> list[dict[str, Any]]:
    """One record per model: ``model``, then per column its score and CI (``<column>``, ``<column>
    low``, ``<column> high``, the bounds where some model has them; None where a model has none),
    rounded to 4 digits. [] when no model has a score."""
    fields: list[tuple[str, tuple[str, str], str]] = []  # (record key, column, metrics key)
    for column in score_columns(models):
        label = column_label(column)
        for suffix, key in (("", "score"), (" low", "score_lo"), (" high", "score_hi")):
            if any(isinstance((_cell(d, *column) or {}).get(key), int | float) for _, d in models):
                fields.append((label + suffix, column, key))
    if not fields:
        return []
    records = []
    for name, metrics in models:
        record: dict[str, Any] = {"model": name}
        for label, column, key in fields:
            value = (_cell(metrics, *column) or {}).get(key)
            record[label] = round(value, 4) if isinstance(value, int | float) else None
        records.append(record)
    return records


def _format(cell: Mapping[str, Any], points: bool) -> str:
    lo, hi = cell.get("score_lo"), cell.get("score_hi")
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        estimate = Estimate(float(cell["score"]), float(lo), float(hi))
        text = fmt_points(estimate) if points else fmt_score(estimate)
    else:
        text = f"{cell['score']:.1f}" if points else f"{cell['score']:.3f}"
    if isinstance(cell.get("best_constant"), int | float):
        text += f" (const {cell['best_constant']:.3f})"
    return text


def scores_markdown(models: Models) -> str:
    """A Markdown table of the models' scores: ``score [CI] (const best-constant)`` per column (the
    normalized average in points), ``—`` where a model has none; '' when no model has a score."""
    columns = score_columns(models)
    if not columns:
        return ""
    rows = [
        [name]
        + [
            _format(cell, section == AVERAGE) if (cell := _cell(metrics, section, mode)) else "—"
            for section, mode in columns
        ]
        for name, metrics in models
    ]
    return md_table(["model", *map(column_label, columns)], rows)
