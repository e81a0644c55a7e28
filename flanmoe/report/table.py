"""The paper-style table as data: one ``ArchResults`` per arch in, a ``Table`` out.

Pure functions over the metrics dicts the pipeline writes (``metrics/pretrain/<arch>.json``,
``metrics/evaluate/<arch>-<pretrain|instruct>.json``, ``metrics/evaluate/<arch>-<task>-<scenario>.json``);
where they come from is the caller's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from flanmoe.grid import EVAL_MODELS as MODELS  # pretrained-only, instruction-tuned
from flanmoe.grid import HELDOUT as SUITES  # held-out suites, each shown on the normalized scale
from flanmoe.grid import MODES
from flanmoe.report.knowledge import Knowledge, build_knowledge
from flanmoe.report.stats import Estimate, difference

AVERAGE = "normalized_average"  # the paper's mean of the suites' normalized scores


class ReportInputError(ValueError):
    """A metrics dict lacks what the report needs; the message names the dict and the key."""


@dataclass(frozen=True)
class ArchResults:
    """Everything measured about one arch.

    ``pretrain``: its pretrain metrics (``params``, ``active_params``, ``flops_per_token``);
    ``evaluate``: ``{"pretrain" | "instruct": evaluate metrics}``; ``finetune``:
    ``{(task, scenario): evaluate metrics of the fine-tuned model}``; ``twin_of``: for a dense arch,
    the MoE arch whose FLOPs per token it matches."""

    name: str
    moe: bool
    pretrain: Mapping
    evaluate: Mapping[str, Mapping]
    finetune: Mapping[tuple[str, str], Mapping] = field(default_factory=dict)
    twin_of: str | None = None
    routing: Mapping | None = None  # MoE: router, decoder_router, num_experts, load_balance_coef, z_loss_coef


@dataclass(frozen=True)
class HeldoutCell:
    """A held-out score: ``normalized`` (chance 0, perfect 100) with its CI; for a suite also the raw
    ``score`` with its CI and the suite's ``chance`` (None for the normalized average)."""

    normalized: Estimate
    score: Estimate | None = None
    chance: float | None = None


@dataclass(frozen=True)
class ScoreCell:
    """A fine-tuned task's test score with its CI and chance level."""

    score: Estimate
    chance: float


@dataclass
class ModelRow:
    arch: str
    moe: bool
    twin_of: str | None
    params: int
    active_params: int
    flops_per_token: float
    routing: Mapping | None = None


@dataclass
class Table:
    """``heldout[arch][model][(suite, mode)]``, ``it_gain[arch][(suite, mode)]`` (instruct - pretrain,
    normalized points), ``finetune[arch][task][scenario]``, ``finetune_gain[arch][task]`` (after_it -
    direct). ``columns``: the (suite, mode) pairs present, ``suites`` ending with the average."""

    models: list[ModelRow]
    columns: list[tuple[str, str]]
    heldout: dict[str, dict[str, dict[tuple[str, str], HeldoutCell]]]
    it_gain: dict[str, dict[tuple[str, str], Estimate]]
    tasks: list[str]
    scenarios: list[str]
    finetune: dict[str, dict[str, dict[str, ScoreCell]]]
    finetune_gain: dict[str, dict[str, Estimate]]
    fewshot_k: int | None = None
    seeds: int = 1  # replicates aggregated in every cell (flanmoe.report.seeds)
    knowledge: Knowledge | None = None  # knowledge by exposure (None: no probe section in any metrics)
    # archs whose pretrained and instruction-tuned cells aggregate more seeds (base.extra_seeds)
    arch_seeds: dict[str, int] = field(default_factory=dict)
    # how the IT-gain intervals were made (findings.pair_it_gains); empty: MOVER of the two cells
    it_gain_intervals: set[str] = field(default_factory=set)
    # BBH tasks per chance basis (options, labels, free_form, ...), from their answer spaces; empty
    # when the chance levels come from the embedded suite's table
    chance_bases: dict[str, int] = field(default_factory=dict)
    # arch -> the instruction-tuned model's held-in metrics (flanmoe.report.heldin); empty: not scored
    heldin: dict[str, Mapping] = field(default_factory=dict)

    @property
    def it_gain_interval_names(self) -> str:
        """``it_gain_intervals`` as the captions name them ('' when the cells are MOVER's)."""
        return ", ".join(sorted(self.it_gain_intervals))

    def seeds_of(self, arch: str) -> int:
        """The replicates aggregated in ``arch``'s held-out cells (its fine-tuned ones: ``seeds``)."""
        return self.arch_seeds.get(arch, self.seeds)


def _require(d: Mapping, keys: tuple[str, ...], where: str):
    cur = d
    for i, k in enumerate(keys):
        if not isinstance(cur, Mapping) or k not in cur:
            raise ReportInputError(f"{where}: no key {'.'.join(keys[: i + 1])!r}")
        cur = cur[k]
    return cur


def _estimate(block: Mapping, key: str, where: str) -> Estimate:
    vals = [_require(block, (k,), where) for k in (key, f"{key}_lo", f"{key}_hi")]
    if not all(isinstance(v, int | float) for v in vals):
        raise ReportInputError(f"{where}: {key}, {key}_lo, {key}_hi must be numbers, got {vals}")
    return Estimate(*(float(v) for v in vals))


def heldout_cell(
    metrics: Mapping, suite: str, mode: str, where: str = "evaluate metrics"
) -> HeldoutCell | None:
    """The cell of ``suite`` x ``mode`` of one evaluate metrics dict (None if it was not evaluated)."""
    block = metrics.get(suite, {}).get(mode)
    if block is None:
        return None
    where = f"{where}: {suite}.{mode}"
    if suite == AVERAGE:
        return HeldoutCell(_estimate(block, "score", where))
    return HeldoutCell(
        _estimate(block, "normalized", where),
        _estimate(block, "score", where),
        float(_require(block, ("chance",), where)),
    )


def chance_bases(metrics: Mapping) -> dict[str, int]:
    """How many BBH tasks of one evaluate metrics dict got their chance level from each basis
    (``chance_basis``: inferred from the task's answer space, ``flanmoe.eval.answer_space``)."""
    modes = [b for b in (metrics.get("bbh") or {}).values() if isinstance(b, Mapping)]
    tasks = (modes[0].get("tasks") or {}).values() if modes else ()  # every mode scores the same tasks
    counts = Counter(t["chance_basis"] for t in tasks if isinstance(t, Mapping) and "chance_basis" in t)
    return dict(sorted(counts.items()))


def chance_note(t: Table) -> str:
    """The held-out caption's sentence on where BBH chance levels come from ('' for the table's)."""
    if not t.chance_bases:
        return ""
    parts = [f"{BASIS_WORDS.get(b, b)} in {n} task{'s' if n != 1 else ''}" for b, n in t.chance_bases.items()]
    return " BBH chance levels from each task's answer space: " + "; ".join(parts) + "."


BASIS_WORDS = {
    "options": "the options listed in the input",
    "labels": "its distinct targets (a label set)",
    "free_form": "none (free-form: chance 0)",
}


def finetune_cell(metrics: Mapping, where: str = "fine-tuned metrics") -> ScoreCell:
    """The test score of a fine-tuned model (``finetune.zero_shot``)."""
    block = _require(metrics, ("finetune", "zero_shot"), where)
    return ScoreCell(
        _estimate(block, "score", f"{where}: finetune.zero_shot"), float(block.get("chance", 0.0))
    )


def build_table(
    archs: list[ArchResults],
    tasks: list[str],
    scenarios: list[str],
    fewshot_k: int | None = None,
    seeds: int = 1,
    arch_seeds: Mapping[str, int] | None = None,
) -> Table:
    """The report's table from the archs' metrics (in the order given); ``seeds``: the replicates of
    every cell, ``arch_seeds``: more for an arch's held-out cells (``base.extra_seeds``). Raises
    ``ReportInputError`` when a dict lacks a key the table needs."""
    models = []
    for a in archs:
        where = f"pretrain metrics of {a.name}"
        models.append(
            ModelRow(
                a.name,
                a.moe,
                a.twin_of,
                int(_require(a.pretrain, ("params",), where)),
                int(_require(a.pretrain, ("active_params",), where)),
                float(_require(a.pretrain, ("flops_per_token",), where)),
                a.routing,
            )
        )
    heldout: dict = {}
    for a in archs:
        heldout[a.name] = {}
        for model in MODELS:
            if model not in a.evaluate:
                raise ReportInputError(f"{a.name}: no evaluate metrics of the {model} model")
            where = f"evaluate metrics of {a.name}-{model}"
            cells = {}
            for suite in (*SUITES, AVERAGE):
                for mode in MODES:
                    cell = heldout_cell(a.evaluate[model], suite, mode, where)
                    if cell is not None:
                        cells[(suite, mode)] = cell
            heldout[a.name][model] = cells
    columns = [
        (s, m)
        for s in (*SUITES, AVERAGE)
        for m in MODES
        if any((s, m) in heldout[a][model] for a in heldout for model in MODELS)
    ]
    it_gain = {
        a: {
            col: difference(cells["instruct"][col].normalized, cells["pretrain"][col].normalized)
            for col in columns
            if col in cells["instruct"] and col in cells["pretrain"]
        }
        for a, cells in heldout.items()
    }
    finetune: dict = {}
    finetune_gain: dict = {}
    for a in archs:
        finetune[a.name] = {}
        for task in tasks:
            row = {}
            for scenario in scenarios:
                if (task, scenario) in a.finetune:
                    where = f"fine-tuned metrics of {a.name}-{task}-{scenario}"
                    row[scenario] = finetune_cell(a.finetune[(task, scenario)], where)
            finetune[a.name][task] = row
            if "direct" in row and "after_it" in row:
                finetune_gain.setdefault(a.name, {})[task] = difference(
                    row["after_it"].score, row["direct"].score
                )
    try:
        knowledge = build_knowledge([(a.name, {m: a.evaluate[m] for m in MODELS}) for a in archs])
    except ValueError as e:
        raise ReportInputError(f"evaluate metrics of {e}") from None
    return Table(
        models,
        columns,
        heldout,
        it_gain,
        list(tasks),
        list(scenarios),
        finetune,
        finetune_gain,
        fewshot_k,
        seeds,
        knowledge,
        {a: n for a, n in (arch_seeds or {}).items() if n != seeds},
        chance_bases=chance_bases(archs[0].evaluate["instruct"]) if archs else {},
        heldin={a.name: h for a in archs if (h := _heldin(a.evaluate["instruct"], a.name)) is not None},
    )


def _heldin(metrics: Mapping, arch: str) -> Mapping | None:
    """The held-in block of one instruction-tuned model's evaluate metrics (None: not scored), with
    what the held-in section reads checked: its zero-shot exact match with a CI, the mean best
    constant, and a score and best constant per task."""
    block = metrics.get("heldin")
    if block is None:
        return None
    where = f"evaluate metrics of {arch}-instruct: heldin"
    cell = block.get("zero_shot") if isinstance(block, Mapping) else None
    if not isinstance(cell, Mapping):
        raise ReportInputError(f"{where}: no zero-shot cell (a mapping)")
    where += ".zero_shot"
    _estimate(cell, "score", where)
    tasks = _require(cell, ("tasks",), where)
    for keys in (("best_constant",), *(("tasks", t, k) for t in tasks for k in ("score", "best_constant"))):
        if not isinstance(value := _require(cell, keys, where), int | float):
            raise ReportInputError(f"{where}: {'.'.join(keys)} must be a number, got {value!r}")
    return block
