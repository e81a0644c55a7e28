"""The report's held-in section: how much of the instruction mixture the instruction-tuned models
learned, and what stops the rest.

Exact match on the instruct stage's validation pairs (never trained on), zero-shot, against two floors:
the best constant answer of each task (a task "learned" beats its own), and the format (of the pairs
whose prompt lists options, the share answered with one of the options listed:
``flanmoe.eval.summary.options_summary``). A model that answers in the listed options but no better
than a constant has the format, not the skill.
"""

from __future__ import annotations

from collections.abc import Mapping

from flanmoe.report.stats import Estimate, fmt_score

HELDIN_HEADING = "Held-in tasks (the instruction mixture's validation pairs)"
HELDIN_TEXT = (
    "Instruction-tuned models, zero-shot, greedy generation: exact match [95% CI] on the instruct"
    " stage's validation pairs (never trained on) and the mean of the tasks' best constant answers."
    " Tasks learned: tasks whose exact match beats their own best constant. Format: of the pairs whose"
    " prompt lists options, the share answered with one of the options listed, and their exact match."
    " With a few pairs per task (evaluate.heldin_examples, instruct.val_examples) a task's best constant"
    " runs high: 2 pairs give at least .5."
)


def heldin_rows(blocks: Mapping[str, Mapping]) -> tuple[list[str], list[list[str]]]:
    """One row per arch of ``blocks`` (arch -> the ``heldin`` section of its instruction-tuned model's
    evaluate metrics, as ``flanmoe.report.table`` checked it)."""
    head = [
        "arch",
        "exact match",
        "best constant",
        "tasks learned",
        "tasks at 0",
        "pairs with options: answered with one",
        "pairs with options: exact match",
    ]
    rows = []
    for arch, block in blocks.items():
        cell = block["zero_shot"]
        em = Estimate(cell["score"], cell["score_lo"], cell["score_hi"])
        tasks = list(cell["tasks"].values())
        learned = sum(t["score"] > t["best_constant"] for t in tasks)
        zero = sum(t["score"] == 0 for t in tasks)
        n_opt = cell.get("options_rows")
        rows.append(
            [
                arch,
                f"{fmt_score(em)} (n {cell.get('n', '?')})",
                f"{cell['best_constant']:.3f}",
                f"{learned} of {len(tasks)}",
                f"{zero} of {len(tasks)}",
                f"{cell['options_answered']:.3f} (n {n_opt})" if n_opt else "—",
                f"{cell['options_exact_match']:.3f}" if n_opt else "—",
            ]
        )
    return head, rows


__all__ = ["HELDIN_HEADING", "HELDIN_TEXT", "heldin_rows"]
