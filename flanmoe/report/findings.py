"""The report's findings: the paper's claims, each judged by a rule from the numbers of a ``Table``.

A claim is a set of differences that should all be positive (one per arch, mode, task ...). Each
difference gets a verdict from its 95% interval (``stats.verdict``) and the claim the combination of
them (``stats.combine_verdicts``). Nothing here is written by hand about a particular run: change the
metrics and the findings change with them. Claims that need runs the default pipeline does not make
(several seeds, sizes, routers, ablations) are listed as not measured, with what would measure them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flanmoe.report.stats import NOT_MEASURED, VERDICT_CODE, Estimate, combine_verdicts, difference, verdict
from flanmoe.report.table import AVERAGE, MODES, Table

MODE_LABEL = {"zero_shot": "zero-shot", "few_shot": "few-shot"}


@dataclass(frozen=True)
class Comparison:
    """One difference behind a claim: ``label`` (e.g. ``switch vs dense, zero-shot``), its estimate
    and verdict."""

    key: str
    label: str
    estimate: Estimate
    verdict: str


@dataclass
class Finding:
    """A claim (``text``), the rule that judges it (``rule``), its verdict and the comparisons."""

    id: str
    text: str
    rule: str
    comparisons: list[Comparison] = field(default_factory=list)
    why_not_measured: str | None = None
    unit: str = "points"  # "points": normalized points (held-out); "score": raw test score (fine-tuning)

    @property
    def verdict(self) -> str:
        return (
            NOT_MEASURED if not self.comparisons else combine_verdicts([c.verdict for c in self.comparisons])
        )

    def as_dict(self) -> dict:
        out: dict = {"claim": self.text, "verdict": self.verdict}
        if self.verdict in VERDICT_CODE:
            out["verdict_code"] = VERDICT_CODE[self.verdict]
            out["unit"] = self.unit
        if self.why_not_measured:
            out["why_not_measured"] = self.why_not_measured
        out["comparisons"] = {
            c.key: {**c.estimate.as_dict(), "verdict": c.verdict, "verdict_code": VERDICT_CODE[c.verdict]}
            for c in self.comparisons
        }
        return out


def _compare(key: str, label: str, est: Estimate) -> Comparison:
    return Comparison(key, label, est, verdict(est))


def moe_dense_pairs(table: Table) -> list[tuple[str, str]]:
    """(MoE arch, its FLOPs-matched dense twin) for every pair that both ran."""
    names = {m.arch for m in table.models}
    return [
        (m.twin_of, m.arch)
        for m in table.models
        if not m.moe and m.twin_of in names and any(x.arch == m.twin_of and x.moe for x in table.models)
    ]


def it_improves_heldout(table: Table) -> Finding:
    f = Finding(
        "it_improves_heldout",
        "Instruction tuning raises the held-out normalized average of every arch, zero- and few-shot.",
        "per arch and mode: instruct - pretrain normalized average; holds if every CI is above 0",
    )
    for arch, gains in table.it_gain.items():
        for mode in MODES:
            if (AVERAGE, mode) in gains:
                f.comparisons.append(
                    _compare(f"{arch}/{mode}", f"{arch}, {MODE_LABEL[mode]}", gains[(AVERAGE, mode)])
                )
    if not f.comparisons:
        f.why_not_measured = "no arch has the normalized average of both its pretrained and instructed model"
    return f


def it_gain_larger_for_moe(table: Table) -> Finding:
    f = Finding(
        "it_gain_moe_over_dense",
        "Instruction tuning helps MoE more than its FLOPs-matched dense twin (held-out normalized average).",
        "per MoE/dense pair and mode: IT gain of MoE - IT gain of dense; holds if every CI is above 0",
    )
    for moe, dense in moe_dense_pairs(table):
        for mode in MODES:
            col = (AVERAGE, mode)
            if col in table.it_gain.get(moe, {}) and col in table.it_gain.get(dense, {}):
                est = difference(table.it_gain[moe][col], table.it_gain[dense][col])
                f.comparisons.append(
                    _compare(f"{moe}-{dense}/{mode}", f"{moe} vs {dense}, {MODE_LABEL[mode]}", est)
                )
    if not f.comparisons:
        f.why_not_measured = (
            "archs.run has no MoE arch together with its dense twin (archs.variants dense_twin_of)"
        )
    return f


def _finetune_diff(table: Table, moe: str, dense: str, task: str, scenario: str) -> Estimate | None:
    a = table.finetune.get(moe, {}).get(task, {}).get(scenario)
    b = table.finetune.get(dense, {}).get(task, {}).get(scenario)
    return None if a is None or b is None else difference(a.score, b.score)


def moe_beats_dense_after_it(table: Table) -> Finding:
    f = Finding(
        "finetune_moe_over_dense_after_it",
        "After instruction tuning, MoE beats its dense twin in single-task fine-tuning.",
        "per MoE/dense pair and task: after_it score of MoE - of dense; holds if every CI is above 0",
        unit="score",
    )
    for moe, dense in moe_dense_pairs(table):
        for task in table.tasks:
            est = _finetune_diff(table, moe, dense, task, "after_it")
            if est is not None:
                f.comparisons.append(_compare(f"{moe}-{dense}/{task}", f"{moe} vs {dense}, {task}", est))
    if not f.comparisons:
        f.why_not_measured = (
            "needs scenario after_it in finetune.scenarios and an MoE arch with its dense twin"
        )
    return f


def it_helps_moe_finetuning_more(table: Table) -> Finding:
    f = Finding(
        "finetune_moe_advantage_grows_with_it",
        "MoE's advantage over dense in single-task fine-tuning is larger after instruction tuning than"
        " with direct fine-tuning (direct favours MoE less).",
        "per MoE/dense pair and task: (MoE - dense after_it) - (MoE - dense direct); holds if every CI is above 0",
        unit="score",
    )
    for moe, dense in moe_dense_pairs(table):
        for task in table.tasks:
            after = _finetune_diff(table, moe, dense, task, "after_it")
            direct = _finetune_diff(table, moe, dense, task, "direct")
            if after is not None and direct is not None:
                f.comparisons.append(
                    _compare(f"{moe}-{dense}/{task}", f"{moe} vs {dense}, {task}", difference(after, direct))
                )
    if not f.comparisons:
        f.why_not_measured = "needs both scenarios (direct, after_it) and an MoE arch with its dense twin"
    return f


# Claims of the paper this pipeline can make but the default run does not measure: (id, claim, what measures it)
NOT_MEASURED_CLAIMS = [
    (
        "across_seeds",
        "The findings above hold across training seeds, not only across test questions.",
        "several seeds (base.seed) aggregated: the CIs here cover the test sample, not training randomness",
    ),
    (
        "scaling",
        "MoE's benefit from instruction tuning grows with model size and number of experts.",
        "runs at several model.preset sizes and model.moe.num_experts",
    ),
    (
        "routers",
        "Expert-choice routing (FLAN-EC) beats top-2 (GShard, ST-MoE), which beats top-1 (Switch), after IT.",
        "archs.run with expert_choice, gshard / st_moe and switch",
    ),
    (
        "freezing",
        "Which weights to freeze in fine-tuning matters (the paper: freezing the gate helps slightly, freezing"
        " the experts or all non-MoE weights hurts).",
        "fine-tuning runs for each finetune.freeze setting",
    ),
    (
        "aux_losses",
        "Auxiliary losses (load balancing, router z-loss) and expert dropout change fine-tuning quality.",
        "ablation runs over model.moe.load_balance_coef, z_loss_coef and finetune.expert_dropout",
    ),
]


def findings(table: Table) -> list[Finding]:
    """The measurable claims, judged on ``table``, followed by the claims this run does not measure."""
    out = [
        it_improves_heldout(table),
        it_gain_larger_for_moe(table),
        moe_beats_dense_after_it(table),
        it_helps_moe_finetuning_more(table),
    ]
    out += [Finding(i, text, "", why_not_measured=why) for i, text, why in NOT_MEASURED_CLAIMS]
    return out
