"""The study's report: the paper-style table (per arch: size and FLOPs; held-out MMLU / BBH normalized
scores zero- and few-shot, pretrained only vs instruction-tuned; fine-tuned task scores direct vs after
IT; the normalized average), every cell with its 95% CI and chance level, and findings judged by rule
from the CIs. Pure functions over the metrics dicts the pipeline writes; no file layout, DVC or MLflow.

    table = build_table(archs, tasks, scenarios, fewshot_k)
    fs = findings(table)
    to_markdown(table, fs), to_html(table, fs), summary(table, fs)  # summary: metrics/report.json

The figures (PNG, matplotlib) are in ``flanmoe.report.plots``, imported apart so that the tables do not
pay for matplotlib: ``write_figures(out_dir, table, routing, curves)`` -> ``[ReportFigure]`` for
``to_markdown`` / ``to_html(..., figures=...)``.
"""

from __future__ import annotations

from flanmoe.report.findings import Finding, findings
from flanmoe.report.knowledge import flat
from flanmoe.report.render import ReportFigure, to_html, to_markdown
from flanmoe.report.stats import Estimate, difference, verdict
from flanmoe.report.table import MODES, ArchResults, ReportInputError, Table, build_table


def summary(table: Table, fs: list[Finding]) -> dict:
    """The report's numbers as a JSON-able dict (the stage's DVC metrics): IT gains per arch, mode and
    suite; fine-tuning gains (after_it - direct) per arch and task; every finding with its verdict;
    with a probe section, ``knowledge``: per arch, model, measure and stratum the score (``flat``)."""
    out = {
        "it_gain_interval": table.it_gain_interval_names or "independent (MOVER)",
        "it_gain": {
            arch: {
                mode: {suite: e.as_dict() for (suite, m), e in gains.items() if m == mode}
                for mode in MODES
                if any(m == mode for _, m in gains)
            }
            for arch, gains in table.it_gain.items()
        },
        "finetune_gain": {
            arch: {task: e.as_dict() for task, e in g.items()} for arch, g in table.finetune_gain.items()
        },
        "findings": {f.id: f.as_dict() for f in fs},
    }
    if table.knowledge is not None:
        out["knowledge"] = flat(table.knowledge)
    return out


__all__ = [
    "ArchResults",
    "Estimate",
    "Finding",
    "ReportFigure",
    "ReportInputError",
    "Table",
    "build_table",
    "difference",
    "findings",
    "summary",
    "to_html",
    "to_markdown",
    "verdict",
]
