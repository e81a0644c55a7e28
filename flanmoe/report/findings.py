"""The report's findings: the paper's claims, each judged by a rule from the numbers of a ``Table``.

A claim is a set of differences that should all be positive (one per arch, mode, task ...). Each
difference gets a verdict from its 95% interval (``stats.verdict``) and the claim the combination of
them (``stats.combine_verdicts``). Nothing here is written by hand about a particular run: change the
metrics and the findings change with them. Claims that need runs the default pipeline does not make
(several seeds, sizes, routers, ablations) are listed as not measured, with what would measure them.

Differences between models (of held-out normalized averages: MoE - dense, instruction-tuned -
pretrained only, router and aux-loss pairs, differences of IT gains; of fine-tuned test scores: MoE -
dense, after IT - direct, frozen - not) are paired question by question when the evaluations'
per-question records are given (``flanmoe.report.heldout_pairs``: the models of one seed answer the
same questions); without them the interval is MOVER's (``stats.difference``), labelled so.
Every comparison carries its minimum detectable effect and, over seeds, the seeds a +-3-point
interval would take (``heldout_pairs.Paired``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flanmoe.grid import HELDOUT, MODE_LABEL, MODES, freeze_scenario
from flanmoe.report.heldout_pairs import FINETUNE, Answers, Model, Paired, contrast, mover, normalized_average
from flanmoe.report.stats import NOT_MEASURED, VERDICT_CODE, Estimate, combine_verdicts, difference, verdict
from flanmoe.report.table import AVERAGE, Table

# per (arch, "pretrain" | "instruct") and (arch, task, scenario): heldout_answers of every seed
# ({seed: answers}, or a list: every model the same seeds; heldout_pairs.contrast)
Records = Mapping[Model, Mapping[int, Answers] | Sequence[Answers]] | None


@dataclass(frozen=True)
class Comparison:
    """One difference behind a claim: ``label`` (e.g. ``switch vs dense, zero-shot``), its estimate
    and verdict; ``power``: how its interval was made, its MDE and seed figures."""

    key: str
    label: str
    estimate: Estimate
    verdict: str
    power: Paired

    def as_dict(self) -> dict:
        p = self.power
        out = {**self.estimate.as_dict(), "verdict": self.verdict, "verdict_code": VERDICT_CODE[self.verdict]}
        out.update(interval=p.interval, mde=round(p.mde, 4))
        if p.seed_sd is not None:
            out["seed_sd"] = round(p.seed_sd, 4)
        if p.seeds_for_3pt is not None:
            out["seeds_for_3pt"] = p.seeds_for_3pt
        return out


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
        out["comparisons"] = {c.key: c.as_dict() for c in self.comparisons}
        return out


def power_note(c: Comparison, unit: str) -> str:
    """How the comparison's interval was made and its power figures, e.g. ``paired bootstrap; MDE
    2.9; seeds for a +-3-point CI: needs >= 2 seeds`` (seeds only for normalized points)."""
    p = c.power
    parts = [p.interval, f"MDE {p.mde:.1f}" if unit == "points" else f"MDE {p.mde:.3f}"]
    if unit == "points":
        if p.seed_sd is not None:
            n = p.seeds_for_3pt if p.seeds_for_3pt is not None else "more than 10,000"
            parts.append(f"seeds for a +-3-point CI: {n} (seed SD {p.seed_sd:.1f})")
        elif p.seeds < 2:
            parts.append("seeds for a +-3-point CI: needs >= 2 seeds")
        else:
            parts.append("seeds for a +-3-point CI: needs per-question records")
    return "; ".join(parts)


def _compare(key: str, label: str, p: Paired) -> Comparison:
    return Comparison(key, label, p.estimate, verdict(p.estimate), p)


def _paired(
    table: Table,
    records: Records,
    terms: dict[Model, float],
    mode: str,
    fallback: Estimate,
    suite: str = AVERAGE,
) -> Paired:
    """The contrast ``terms`` of normalized averages (or of one suite's normalized scores) in ``mode``,
    paired from ``records`` where they allow it (``heldout_pairs.contrast``), else ``fallback``
    (MOVER) labelled so."""
    cells = [table.heldout.get(a, {}).get(m, {}) for a, m in terms]
    if records and all((suite, mode) in c for c in cells):
        suites = [s for s in HELDOUT if all((s, mode) in c for c in cells)] if suite == AVERAGE else [suite]
        chance = {s: cells[0][(s, mode)].chance for s in suites}
        expected = {m: c[(suite, mode)].normalized.value for m, c in zip(terms, cells, strict=True)}
        paired = contrast(records, terms, mode, normalized_average(chance), expected)
        if paired is not None:
            return paired
    return mover(fallback, min(table.seeds_of(a) for a, _ in terms))  # the seeds both models have


def _finetune_paired(table: Table, records: Records, terms: dict[Model, float], fallback: Estimate) -> Paired:
    """The contrast ``terms`` of fine-tuned models' test scores (``(arch, task, scenario)``), paired
    from ``records`` where they allow it, else ``fallback`` (MOVER) labelled so."""
    cells = [table.finetune.get(a, {}).get(t, {}).get(s) for a, t, s in terms]
    if records and all(c is not None for c in cells):
        expected = {m: c.score.value for m, c in zip(terms, cells, strict=True)}
        paired = contrast(records, terms, "zero_shot", FINETUNE, expected, tolerance=1e-5, half_width=None)
        if paired is not None:
            return paired
    return mover(fallback, table.seeds)


def moe_dense_pairs(table: Table) -> list[tuple[str, str]]:
    """(MoE arch, its FLOPs-matched dense twin) for every pair that both ran."""
    names = {m.arch for m in table.models}
    return [
        (m.twin_of, m.arch)
        for m in table.models
        if not m.moe and m.twin_of in names and any(x.arch == m.twin_of and x.moe for x in table.models)
    ]


def pair_it_gains(table: Table, records: Records) -> None:
    """The held-out table's IT-gain cells (instruct - pretrain, per suite and the average) paired
    question by question where ``records`` allow it, in place; ``table.it_gain_intervals`` names how
    each cell's interval was made (``heldout_pairs``: paired bootstrap, seed t, or MOVER)."""
    for arch, gains in table.it_gain.items():
        terms = {(arch, "instruct"): 1.0, (arch, "pretrain"): -1.0}
        for suite, mode in list(gains):
            p = _paired(table, records, terms, mode, gains[(suite, mode)], suite)
            gains[(suite, mode)] = p.estimate
            table.it_gain_intervals.add(p.interval)


def it_improves_heldout(table: Table, records: Records = None) -> Finding:
    f = Finding(
        "it_improves_heldout",
        "Instruction tuning raises the held-out normalized average of every arch, zero- and few-shot.",
        "per arch and mode: instruct - pretrain normalized average; holds if every CI is above 0",
    )
    for arch, gains in table.it_gain.items():
        for mode in MODES:
            if (AVERAGE, mode) in gains:
                terms = {(arch, "instruct"): 1.0, (arch, "pretrain"): -1.0}
                p = _paired(table, records, terms, mode, gains[(AVERAGE, mode)])
                f.comparisons.append(_compare(f"{arch}/{mode}", f"{arch}, {MODE_LABEL[mode]}", p))
    if not f.comparisons:
        f.why_not_measured = "no arch has the normalized average of both its pretrained and instructed model"
    return f


def moe_beats_dense_heldout(table: Table, records: Records = None) -> Finding:
    f = Finding(
        "moe_over_dense_heldout",
        "After instruction tuning, MoE beats its FLOPs-matched dense twin on the held-out normalized"
        " average, zero- and few-shot (the paper's headline).",
        "per MoE/dense pair and mode: instruction-tuned normalized average of MoE - of dense; holds if every"
        " CI is above 0",
    )
    f.comparisons = _it_average_differences(table, moe_dense_pairs(table), records)
    if not f.comparisons:
        f.why_not_measured = (
            "archs.run has no MoE arch together with its dense twin (archs.variants dense_twin_of)"
        )
    return f


def it_gain_larger_for_moe(table: Table, records: Records = None) -> Finding:
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
                terms = {(moe, "instruct"): 1.0, (moe, "pretrain"): -1.0}
                terms.update({(dense, "instruct"): -1.0, (dense, "pretrain"): 1.0})
                p = _paired(table, records, terms, mode, est)
                f.comparisons.append(
                    _compare(f"{moe}-{dense}/{mode}", f"{moe} vs {dense}, {MODE_LABEL[mode]}", p)
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


def moe_beats_dense_after_it(table: Table, records: Records = None) -> Finding:
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
                terms = {(moe, task, "after_it"): 1.0, (dense, task, "after_it"): -1.0}
                p = _finetune_paired(table, records, terms, est)
                f.comparisons.append(_compare(f"{moe}-{dense}/{task}", f"{moe} vs {dense}, {task}", p))
    if not f.comparisons:
        f.why_not_measured = (
            "needs scenario after_it in finetune.scenarios and an MoE arch with its dense twin"
        )
    return f


def it_helps_moe_finetuning_more(table: Table, records: Records = None) -> Finding:
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
                terms = {(moe, task, "after_it"): 1.0, (dense, task, "after_it"): -1.0}
                terms.update({(moe, task, "direct"): -1.0, (dense, task, "direct"): 1.0})
                est = _finetune_paired(table, records, terms, difference(after, direct))
                f.comparisons.append(_compare(f"{moe}-{dense}/{task}", f"{moe} vs {dense}, {task}", est))
    if not f.comparisons:
        f.why_not_measured = "needs both scenarios (direct, after_it) and an MoE arch with its dense twin"
    return f


def _it_average(table: Table, arch: str, mode: str) -> Estimate | None:
    cell = table.heldout.get(arch, {}).get("instruct", {}).get((AVERAGE, mode))
    return None if cell is None else cell.normalized


def _it_average_differences(
    table: Table, pairs: list[tuple[str, str]], records: Records = None
) -> list[Comparison]:
    """Per (a, b) and mode: instruction-tuned normalized average of a - of b (where both exist)."""
    out = []
    for a, b in pairs:
        for mode in MODES:
            ea, eb = _it_average(table, a, mode), _it_average(table, b, mode)
            if ea is not None and eb is not None:
                terms = {(a, "instruct"): 1.0, (b, "instruct"): -1.0}
                p = _paired(table, records, terms, mode, difference(ea, eb))
                out.append(_compare(f"{a}-{b}/{mode}", f"{a} vs {b}, {MODE_LABEL[mode]}", p))
    return out


def _routing(table: Table) -> dict[str, dict]:
    return {m.arch: dict(m.routing) for m in table.models if m.moe and m.routing}


def expert_choice_over_token_choice(table: Table, records: Records = None) -> Finding:
    f = Finding(
        "routers",
        "Expert-choice routing (FLAN-EC) beats token-choice routing (top-1 Switch, top-2 GShard / ST-MoE)"
        " after instruction tuning (held-out normalized average).",
        "per expert-choice arch, token-choice arch with as many experts, and mode: instruction-tuned"
        " normalized average of EC - of TC; holds if every CI is above 0",
    )
    routing = _routing(table)
    ec = [a for a, r in routing.items() if r.get("router") == "expert_choice"]
    tc = [a for a, r in routing.items() if r.get("router") != "expert_choice"]
    pairs = [(a, b) for a in ec for b in tc if routing[a].get("num_experts") == routing[b].get("num_experts")]
    f.comparisons = _it_average_differences(table, pairs, records)
    if not f.comparisons:
        f.why_not_measured = (
            "archs.run with expert_choice and a token-choice MoE arch (switch, gshard, st_moe)"
        )
    return f


def z_loss_helps(table: Table, records: Records = None) -> Finding:
    f = Finding(
        "aux_losses",
        "Adding the router z-loss to the load-balancing loss (ST-MoE vs GShard) improves the instruction-tuned"
        " model (held-out normalized average).",
        "per pair of MoE archs alike but for the z-loss (same routers and experts, z-loss > 0 vs 0) and mode:"
        " instruction-tuned normalized average with z-loss - without; holds if every CI is above 0",
    )
    routing = _routing(table)

    def alike(ra: dict, rb: dict) -> bool:  # st_moe routes as gshard (top-2) and adds the z-loss
        top2 = {"st_moe": "gshard"}
        return all(
            top2.get(ra.get(k), ra.get(k)) == top2.get(rb.get(k), rb.get(k))
            for k in ("router", "decoder_router")
        ) and all(ra.get(k) == rb.get(k) for k in ("num_experts", "load_balance_coef"))

    pairs = [
        (a, b)
        for a, ra in routing.items()
        for b, rb in routing.items()
        if ra.get("z_loss_coef", 0) > 0 and rb.get("z_loss_coef", 0) == 0 and alike(ra, rb)
    ]
    f.comparisons = _it_average_differences(table, pairs, records)
    if not f.comparisons:
        f.why_not_measured = (
            "two MoE archs alike but for the router z-loss (e.g. st_moe and gshard) in archs.run"
        )
    return f


def _freeze_finding(table: Table, option: str, helps: bool, records: Records = None) -> Finding:
    scenario = freeze_scenario(option)
    if helps:
        f = Finding(
            f"freeze_{option}",
            f"Freezing the {option} during fine-tuning after IT does better than training every weight"
            " (the paper: freezing the gate helps slightly).",
            f"per arch and task: after-IT score with the {option} frozen - with nothing frozen; holds if every"
            " CI is above 0",
            unit="score",
        )
    else:
        f = Finding(
            f"freeze_{option}",
            f"Freezing the {option} during fine-tuning after IT hurts, compared with training every weight"
            " (the paper: freezing the experts or the MoE layers hurts).",
            f"per arch and task: after-IT score with nothing frozen - with the {option} frozen; holds if every"
            " CI is above 0",
            unit="score",
        )
    for arch, by_task in table.finetune.items():
        for task, cells in by_task.items():
            if scenario in cells and "after_it" in cells:
                frozen, plain = cells[scenario].score, cells["after_it"].score
                est = difference(frozen, plain) if helps else difference(plain, frozen)
                sign = 1.0 if helps else -1.0
                terms = {(arch, task, scenario): sign, (arch, task, "after_it"): -sign}
                p = _finetune_paired(table, records, terms, est)
                f.comparisons.append(_compare(f"{arch}/{task}", f"{arch}, {task}", p))
    if not f.comparisons:
        f.why_not_measured = f"freeze_ablation.freeze with {option} and an MoE arch in freeze_ablation.archs"
    return f


ACROSS_SEEDS_NEEDS = (
    "several seeds (base.seeds) aggregated: the CIs here cover the test sample, not training randomness"
)
# Claims of the paper this pipeline can make but a run may not measure: (id, claim, what measures it)
NOT_MEASURED_CLAIMS = [
    (
        "across_seeds",
        "The findings above hold across training seeds, not only across test questions.",
        ACROSS_SEEDS_NEEDS,
    ),
    (
        "scaling",
        "MoE's benefit from instruction tuning grows with model size and number of experts.",
        "runs at several model.preset sizes and model.moe.num_experts",
    ),
]


def findings(table: Table, records: Records = None) -> list[Finding]:
    """The measurable claims, judged on ``table``, followed by the claims this run does not measure
    (a measurable claim without the runs it needs is listed there too). ``records``: per (arch,
    model) the held-out per-question results of every seed (``heldout_pairs.heldout_answers``), for
    paired intervals; None: every interval MOVER's."""
    out = [
        it_improves_heldout(table, records),
        moe_beats_dense_heldout(table, records),
        it_gain_larger_for_moe(table, records),
        moe_beats_dense_after_it(table, records),
        it_helps_moe_finetuning_more(table, records),
        expert_choice_over_token_choice(table, records),
        z_loss_helps(table, records),
        _freeze_finding(table, "gate", helps=True, records=records),
        _freeze_finding(table, "experts", helps=False, records=records),
    ]
    out += [
        Finding(i, text, "", why_not_measured=_seeds_why(table) if i == "across_seeds" else why)
        for i, text, why in NOT_MEASURED_CLAIMS
        if not (i == "across_seeds" and table.seeds > 1)
    ]
    return out


def _seeds_why(table: Table) -> str:
    """What the across-seeds claim needs, naming the archs that already have several seeds
    (``base.extra_seeds``): the findings between those are over seeds, the rest over questions."""
    many = {a: n for a, n in table.arch_seeds.items() if n > 1}
    if not many:
        return ACROSS_SEEDS_NEEDS
    counts = ", ".join(f"{a} {n}" for a, n in many.items())
    return (
        f"several seeds (base.seeds) for every arch: only {counts} seeds here (base.extra_seeds), so only"
        " the findings among those are over training seeds (seed t); the other archs' CIs cover the test"
        " sample, not training randomness"
    )
