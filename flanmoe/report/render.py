"""The report as Markdown and as one standalone HTML page (inline CSS, nothing fetched).

Both are drawn from the same ``Table`` and ``Finding`` objects, with the same number formats:
normalized scores and their gains in points with one decimal, raw scores and chance levels with three.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from flanmoe.grid import scenario_label
from flanmoe.report.css import CSS
from flanmoe.report.findings import Finding, power_note
from flanmoe.report.heldin import HELDIN_HEADING, HELDIN_TEXT, heldin_rows
from flanmoe.report.heldout_pairs import POWER_METHOD
from flanmoe.report.knowledge import MEASURE_LABEL, RELATIONS, exposure
from flanmoe.report.stats import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    WITHIN_NOISE,
    Estimate,
    fmt_points,
    fmt_score,
)
from flanmoe.report.table import AVERAGE, Table, chance_note

SUITE_LABEL = {"mmlu": "MMLU", "bbh": "BBH", AVERAGE: "normalized avg"}
MODEL_LABEL = {"pretrain": "pretrained only", "instruct": "instruction-tuned"}
METHOD = (
    "Every score is a point estimate with its 95% percentile-bootstrap CI over the test examples (one model,"
    " one seed). Normalized scores put chance at 0 and a perfect score at 100 (the paper's normalization);"
    " the normalized average is the mean of the held-out suites' normalized scores. A gain or difference"
    " a - b gets its CI from the two CIs by MOVER (Zou & Donner 2008), taking a and b as independent:"
    " lo = d - sqrt((a - a_lo)^2 + (b_hi - b)^2), hi = d + sqrt((a_hi - a)^2 + (b - b_lo)^2). Both models"
    " are scored on the same questions, so their errors correlate positively and these CIs are"
    " conservative. A claim's difference holds when its CI lies above 0, does not hold when below 0,"
    " and is within noise when the CI contains 0; a claim made for every arch, mode or task holds when"
    " each case holds and does not hold when any case does not."
)
SEEDS_METHOD = (
    "Every score is the mean over {n}, each model scored on the same test"
    " examples. Its 95% CI adds, in quadrature on each side, the test-sample error (the mean of the seeds'"
    " bootstrap half-widths: the seeds share the questions, so this error does not average away) and the"
    " training-randomness error (t(n-1) x sd / sqrt(n) of the seeds' values)."
)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def seed_counts(table: Table) -> str:
    """``3 training seeds (base.seeds)``, with the archs that have more named: ``...; dense and
    switch 8 with base.extra_seeds, ...``."""
    text = f"{table.seeds} training seed{'s' if table.seeds != 1 else ''} (base.seeds"
    by_count: dict[int, list[str]] = {}
    for arch, n in table.arch_seeds.items():
        by_count.setdefault(n, []).append(arch)
    if by_count:
        more = "; ".join(f"{_and(archs)} {n}" for n, archs in by_count.items())
        text += (
            f"; {more} with base.extra_seeds, in their pretrained and instruction-tuned scores; a difference"
            " between two models pairs the seeds both have"
        )
    return text + ")"


def method(table: Table) -> str:
    """The Method paragraph: how the CIs were made (one seed, or aggregated over ``table.seeds`` and,
    for an arch with extra seeds, ``table.arch_seeds``)."""
    if table.seeds <= 1 and not table.arch_seeds:
        return f"{METHOD} {POWER_METHOD}"
    return (
        SEEDS_METHOD.format(n=seed_counts(table))
        + " "
        + METHOD.replace(
            "Every score is a point estimate with its 95% percentile-bootstrap CI over the test examples (one model,"
            " one seed). ",
            "",
        )
        + " "
        + POWER_METHOD
    )


@dataclass(frozen=True)
class ReportFigure:
    """A PNG written beside the report (``file``: its name in the report's folder), shown at the end of
    its ``section``: ``heldout``, ``knowledge``, ``finetune`` or ``training``."""

    file: str
    title: str
    caption: str
    section: str


def _md_figures(figures: Sequence[ReportFigure], section: str) -> list[str]:
    out = []
    for f in figures:
        if f.section == section:
            out += [f"![{f.title}]({f.file})", "", f"*{f.caption}*", ""]
    return out


def _html_figures(figures: Sequence[ReportFigure], section: str) -> list[str]:
    e = html.escape
    return [
        f'<figure><img src="{e(f.file)}" alt="{e(f.title)}"><figcaption>{e(f.caption)}</figcaption></figure>'
        for f in figures
        if f.section == section
    ]


def _mode_label(mode: str, k: int | None) -> str:
    return "0-shot" if mode == "zero_shot" else (f"{k}-shot" if k else "few-shot")


def _column_label(col: tuple[str, str], k: int | None) -> str:
    return f"{SUITE_LABEL.get(col[0], col[0])} {_mode_label(col[1], k)}"


def model_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    head = ["arch", "kind", "params", "active params", "FLOPs/token"]
    rows = []
    for m in t.models:
        kind = "MoE" if m.moe else (f"dense (FLOPs twin of {m.twin_of})" if m.twin_of else "dense")
        rows.append([m.arch, kind, f"{m.params:,}", f"{m.active_params:,}", f"{m.flops_per_token:,.0f}"])
    return head, rows


def heldout_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """Per arch: pretrained only, instruction-tuned, IT gain. A suite's cell: normalized score [CI] ·
    raw score · chance."""
    head = ["arch", "model"] + [_column_label(c, t.fewshot_k) for c in t.columns]
    rows = []
    for arch, by_model in t.heldout.items():
        for model, cells in by_model.items():
            row = [arch, MODEL_LABEL.get(model, model)]
            for col in t.columns:
                c = cells.get(col)
                if c is None:
                    row.append("—")
                elif c.score is None:
                    row.append(fmt_points(c.normalized))
                else:
                    row.append(
                        f"{fmt_points(c.normalized)} · acc {c.score.value:.3f} · chance {c.chance:.3f}"
                    )
            rows.append(row)
        gains = t.it_gain.get(arch, {})
        rows.append(
            [arch, "IT gain"] + [fmt_points(gains[c], sign=True) if c in gains else "—" for c in t.columns]
        )
    return head, rows


def finetune_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """Per arch and task: chance, each scenario's score [CI], after_it - direct [CI]."""
    head = ["arch", "task", "chance"] + [scenario_label(s) for s in t.scenarios] + ["after IT - direct"]
    rows = []
    for arch, by_task in t.finetune.items():
        for task, cells in by_task.items():
            if not cells:
                continue
            chance = next(iter(cells.values())).chance
            row = [arch, task, f"{chance:.3f}"]
            row += [fmt_score(cells[s].score) if s in cells else "—" for s in t.scenarios]
            gain = t.finetune_gain.get(arch, {}).get(task)
            row.append(fmt_score(gain, sign=True) if gain is not None else "—")
            rows.append(row)
    return head, rows


KNOWLEDGE_HEADING = "Knowledge by exposure"
KNOWLEDGE_TEXT = (
    "Held-out people of the pretraining corpus, by the number N of biographies each has there"
    " (people_x<N>): accuracy [95% CI] of choosing the true fact among its options by log-likelihood."
    " Storage: the probe's cloze (the fact in the corpus's span-corruption form); extraction: the probe's"
    " bare question (no options shown) and the MMLU-style people questions zero-shot (instruction format),"
    " both in the answer form of the header."
    " A model that stores a fact but cannot extract it scores above chance on cloze only."
)
RELATIONS_TEXT = "Held-out relations (secondary probe): MMLU zero-shot score [95% CI] per subject."


def knowledge_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """Per arch, model stage and measure: score [CI] per stratum (by N), then the chance level."""
    k = t.knowledge
    if k is None:
        return [], []
    head = ["arch", "model", "measure", *(f"{s} (N={exposure(s)})" for s in k.strata), "chance"]
    rows = []
    for (arch, model, measure), cells in k.cells.items():
        chance = k.chance.get((arch, model, measure))
        rows.append(
            [arch, MODEL_LABEL.get(model, model), MEASURE_LABEL[measure]]
            + [fmt_score(cells[s]) if s in cells else "—" for s in k.strata]
            + [f"{chance:.3f}" if chance is not None else "—"]
        )
    return head, rows


def relation_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """Per arch and model stage: MMLU zero-shot score [CI] of each held-out relation subject."""
    k = t.knowledge
    if k is None or not k.relations:
        return [], []
    subjects = [s for s in RELATIONS if any(s in r for r in k.relations.values())]
    rows = [
        [arch, MODEL_LABEL.get(model, model)] + [fmt_score(r[s]) if s in r else "—" for s in subjects]
        for (arch, model), r in k.relations.items()
    ]
    return ["arch", "model", *subjects], rows


PAIRED_TEXT = (
    "Paired differences on the same questions, a - b [95% CI]: with one seed a bootstrap over the questions,"
    " with several the t-interval of the per-seed differences."
)


def paired_rows_table(t: Table) -> tuple[list[str], list[list[str]]]:
    """Per comparison (a - b) and measure: the paired difference [CI] per stratum."""
    k = t.knowledge
    if k is None or not k.paired:
        return [], []
    head = ["a", "b", "measure", *k.strata]
    rows = [
        [r.a, r.b, MEASURE_LABEL[r.measure]]
        + [fmt_score(r.cells[s], sign=True) if s in r.cells else "—" for s in k.strata]
        for r in k.paired
    ]
    return head, rows


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_diff(f: Finding, e: Estimate) -> str:
    return fmt_points(e, sign=True) if f.unit == "points" else fmt_score(e, sign=True)


def to_markdown(
    t: Table,
    fs: list[Finding],
    title: str = "FLAN-MoE study report",
    source: str = "",
    figures: Sequence[ReportFigure] = (),
) -> str:
    """The whole report as GitHub Markdown; ``figures`` are linked by their file name (PNGs beside it)."""
    archs = ", ".join(m.arch for m in t.models)
    out = [f"# {title}", ""]
    if source:
        out += [source, ""]
    out += [
        "## Models",
        "",
        f"Archs: {archs}. FLOPs/token: forward pass, matmuls of the active experts only (flanmoe/model/flops.py).",
        "",
    ]
    out += [md_table(*model_rows(t)), ""]
    out += [
        "## Held-out evaluation (scenario 2: instruction tuning, then zero- and few-shot)",
        "",
        "Each suite: normalized score [95% CI] (chance 0, perfect 100) · raw score (acc) · chance level."
        " IT gain = instruction-tuned - pretrained only, in normalized points [95% CI"
        + (f": {t.it_gain_interval_names}" if t.it_gain_intervals else "")
        + "]."
        + chance_note(t),
        "",
        md_table(*heldout_rows(t)),
        "",
        *_md_figures(figures, "heldout"),
    ]
    if t.knowledge is not None:
        out += [f"## {KNOWLEDGE_HEADING}", "", KNOWLEDGE_TEXT, "", md_table(*knowledge_rows(t)), ""]
        pair_head, pair_rows = paired_rows_table(t)
        if pair_rows:
            out += [PAIRED_TEXT, "", md_table(pair_head, pair_rows), ""]
        rel_head, rel_rows = relation_rows(t)
        if rel_rows:
            out += [RELATIONS_TEXT, "", md_table(rel_head, rel_rows), ""]
        out += _md_figures(figures, "knowledge")
    if (held := heldin_rows(t.heldin))[1]:
        out += [f"## {HELDIN_HEADING}", "", HELDIN_TEXT, "", md_table(*held), ""]
    head, rows = finetune_rows(t)
    out += ["## Single-task fine-tuning (scenario 1: direct; scenario 3: after IT)", ""]
    if rows:
        out += [
            "Test-split score [95% CI] (accuracy by rank classification, or exact match) with the task's"
            " chance level.",
            "",
            md_table(head, rows),
            "",
        ]
    else:
        out += ["No fine-tuned models in this run (finetune.tasks or finetune.scenarios empty).", ""]
    out += _md_figures(figures, "finetune")
    if any(f.section == "training" for f in figures):
        out += ["## Training curves and expert routing", "", *_md_figures(figures, "training")]
    out += [
        "## Findings",
        "",
        "Computed by rule from the CIs above (see Method); none is written by hand.",
        "",
    ]
    measured = [f for f in fs if f.comparisons]
    unmeasured = [f for f in fs if not f.comparisons]
    for i, f in enumerate(measured, 1):
        out.append(f"{i}. **{f.verdict}** — {f.text}")
        out.append(f"   Rule: {f.rule}.")
        out += [
            f"   - {c.label}: {_fmt_diff(f, c.estimate)} — {c.verdict} ({power_note(c, f.unit)})"
            for c in f.comparisons
        ]
    out += ["", "### Not measured in this run", ""]
    out += [f"- {f.text} Needs: {f.why_not_measured}." for f in unmeasured]
    out += ["", "## Method", "", method(t), ""]
    return "\n".join(out)


_VERDICT_CLASS = {HOLDS: "holds", DOES_NOT_HOLD: "doesnot", WITHIN_NOISE: "noise", NOT_MEASURED: "unmeasured"}


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], gain_label: str | None = None) -> str:
    e = html.escape
    parts = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        cls = ' class="gain"' if gain_label is not None and gain_label in r else ""
        cells = []
        for i, cell in enumerate(r):
            main, _, side = cell.partition(" · ")
            inner = e(main) + (f'<span class="side">{e(side)}</span>' if side else "")
            cells.append(f'<td class="num">{inner}</td>' if i >= 2 else f"<td>{inner}</td>")
        parts.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _verdict_html(v: str) -> str:
    return f'<span class="v {_VERDICT_CLASS[v]}">{html.escape(v)}</span>'


def to_html(
    t: Table,
    fs: list[Finding],
    title: str = "FLAN-MoE study report",
    source: str = "",
    figures: Sequence[ReportFigure] = (),
) -> str:
    """The whole report as one HTML page: inline CSS, no script, nothing fetched but ``figures``
    (``<img>`` of the PNGs beside the page, by file name)."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if source:
        out.append(f"<p>{e(source)}</p>")
    out += ["<h2>Models</h2>", _html_table(*model_rows(t))]
    out += [
        "<h2>Held-out evaluation (scenario 2: instruction tuning, then zero- and few-shot)</h2>",
        "<p>Each suite: normalized score [95% CI] (chance 0, perfect 100), below it the raw score and the"
        " chance level. IT gain = instruction-tuned − pretrained only, in normalized points [95% CI"
        + (f": {e(t.it_gain_interval_names)}" if t.it_gain_intervals else "")
        + "]."
        + e(chance_note(t))
        + "</p>",
        _html_table(*heldout_rows(t), gain_label="IT gain"),
        *_html_figures(figures, "heldout"),
    ]
    if t.knowledge is not None:
        out += [
            f"<h2>{KNOWLEDGE_HEADING}</h2>",
            f"<p>{e(KNOWLEDGE_TEXT)}</p>",
            _html_table(*knowledge_rows(t)),
        ]
        pair_head, pair_rows = paired_rows_table(t)
        if pair_rows:
            out += [f"<p>{e(PAIRED_TEXT)}</p>", _html_table(pair_head, pair_rows)]
        rel_head, rel_rows = relation_rows(t)
        if rel_rows:
            out += [f"<p>{e(RELATIONS_TEXT)}</p>", _html_table(rel_head, rel_rows)]
        out += _html_figures(figures, "knowledge")
    if (held := heldin_rows(t.heldin))[1]:
        out += [f"<h2>{HELDIN_HEADING}</h2>", f"<p>{e(HELDIN_TEXT)}</p>", _html_table(*held)]
    head, rows = finetune_rows(t)
    out.append("<h2>Single-task fine-tuning (scenario 1: direct; scenario 3: after IT)</h2>")
    out.append(
        "<p>Test-split score [95% CI] with the task's chance level.</p>" + _html_table(head, rows)
        if rows
        else "<p>No fine-tuned models in this run.</p>"
    )
    out += _html_figures(figures, "finetune")
    if any(f.section == "training" for f in figures):
        out += ["<h2>Training curves and expert routing</h2>", *_html_figures(figures, "training")]
    out += [
        "<h2>Findings</h2>",
        "<p>Computed by rule from the CIs above (see Method); none is written by hand.</p>",
    ]
    out.append("<ol>")
    for f in (f for f in fs if f.comparisons):
        items = "".join(
            f'<li>{e(c.label)}: <span class="num">'
            f"{e(_fmt_diff(f, c.estimate))}</span> "
            f'{_verdict_html(c.verdict)} <span class="rule">{e(power_note(c, f.unit))}</span></li>'
            for c in f.comparisons
        )
        out.append(
            f'<li>{_verdict_html(f.verdict)} {e(f.text)}<div class="rule">Rule: {e(f.rule)}.</div>'
            f"<ul>{items}</ul></li>"
        )
    out.append("</ol><h3>Not measured in this run</h3><ul>")
    out += [
        f'<li>{_verdict_html(NOT_MEASURED)} {e(f.text)} <span class="rule">Needs: {e(f.why_not_measured or "")}.'
        "</span></li>"
        for f in fs
        if not f.comparisons
    ]
    out += ["</ul>", "<h2>Method</h2>", f"<p>{e(method(t))}</p>", "</body></html>", ""]
    return "\n".join(out)


__all__ = ["ReportFigure", "fmt_points", "fmt_score", "to_html", "to_markdown"]
