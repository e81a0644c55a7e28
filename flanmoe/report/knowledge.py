"""Knowledge by exposure: how well each model knows the held-out people of the pretraining corpus, per
stratum ``people_x<N>`` (people with N biographies each), by four measures:

- ``cloze``: the probe suite's cloze mode (the fact in the corpus's span-corruption form: storage);
- ``qa``: its qa mode (the question, the answer as the masked span: extraction in the pretraining form);
- ``question``: the probe suite's question mode (the bare question, no options: extraction);
- ``mmlu``: the MMLU suite's people subjects, zero-shot (the question in the OPTIONS prompt: extraction
  in the instruction format);

all scored by option log-likelihood, and, apart, the MMLU zero-shot scores of the held-out *relation*
subjects (``RELATIONS``: a secondary probe). Pure functions over the evaluate metrics dicts (already
aggregated over seeds by the caller); ``None`` when no model has a probe section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flanmoe.report.stats import Estimate

# (measure, section, mode) in report order
MEASURES = (
    ("cloze", "probe", "cloze"),
    ("qa", "probe", "qa"),
    ("question", "probe", "question"),
    ("mmlu", "mmlu", "zero_shot"),
)
MEASURE_LABEL = {
    "cloze": "probe cloze (storage)",
    "qa": "probe QA cloze (extraction, pretraining form)",
    "question": "probe question (extraction, no options)",
    "mmlu": "MMLU-style people, 0-shot (extraction, instruction format)",
}
RELATIONS = ("world_geography", "zoology", "chemistry")  # held-out relations: the secondary probe
# the figure's panels: (measure, model stage)
PANELS = (("cloze", "pretrain"), ("qa", "pretrain"), ("qa", "instruct"), ("mmlu", "instruct"))
STRATUM = re.compile(r"people_x(\d+)")


def exposure(stratum: str) -> int:
    """N of ``people_x<N>``: biographies per person in the pretraining corpus."""
    m = STRATUM.fullmatch(stratum)
    if m is None:
        raise ValueError(f"{stratum!r} is not a stratum name people_x<N>")
    return int(m[1])


@dataclass(frozen=True)
class Knowledge:
    """``strata``: ``people_x<N>`` by N; ``cells[(arch, model, measure)]``: {stratum: score [CI]} of the
    rows with a score; ``chance[(arch, model, measure)]``: the row's chance level;
    ``relations[(arch, model)]``: {subject of ``RELATIONS``: MMLU zero-shot score [CI]};
    ``paired``: ``flanmoe.report.paired.PairedRow`` s (from the per-question records, when given)."""

    strata: list[str]
    cells: dict[tuple[str, str, str], dict[str, Estimate]]
    chance: dict[tuple[str, str, str], float]
    relations: dict[tuple[str, str], dict[str, Estimate]]
    paired: list = field(default_factory=list)


def _tasks(metrics: Mapping, section: str, mode: str) -> Mapping:
    block = (metrics.get(section) or {}).get(mode)
    tasks = block.get("tasks") if isinstance(block, Mapping) else None
    return tasks if isinstance(tasks, Mapping) else {}


def _estimate(task: object, where: str) -> Estimate:
    keys = ("score", "score_lo", "score_hi")
    if not isinstance(task, Mapping) or not all(
        isinstance(task.get(k), int | float) and not isinstance(task.get(k), bool) for k in keys
    ):
        raise ValueError(f"{where}: needs numbers {', '.join(keys)}")
    return Estimate(float(task["score"]), float(task["score_lo"]), float(task["score_hi"]))


def build_knowledge(evaluate: Sequence[tuple[str, Mapping[str, Mapping]]]) -> Knowledge | None:
    """From ``[(arch, {model: evaluate metrics})]`` (archs and models in report order); None when no
    model has a ``probe`` section. Raises ``ValueError`` naming the task when a stratum's score lacks a
    number."""
    if not any(isinstance(m.get("probe"), Mapping) for _, by_model in evaluate for m in by_model.values()):
        return None
    strata: set[str] = set()
    cells: dict[tuple[str, str, str], dict[str, Estimate]] = {}
    chance: dict[tuple[str, str, str], float] = {}
    relations: dict[tuple[str, str], dict[str, Estimate]] = {}
    for arch, by_model in evaluate:
        for model, metrics in by_model.items():
            for measure, section, mode in MEASURES:
                row = {}
                for name, task in _tasks(metrics, section, mode).items():
                    if STRATUM.fullmatch(name):
                        row[name] = _estimate(task, f"{arch}-{model} {section}.{mode}.tasks.{name}")
                        if isinstance(task.get("chance"), int | float):
                            chance.setdefault((arch, model, measure), float(task["chance"]))
                if row:
                    cells[(arch, model, measure)] = row
                    strata.update(row)
            mmlu = _tasks(metrics, "mmlu", "zero_shot")
            rel = {
                s: _estimate(mmlu[s], f"{arch}-{model} mmlu.zero_shot.tasks.{s}")
                for s in RELATIONS
                if s in mmlu
            }
            if rel:
                relations[(arch, model)] = rel
    return Knowledge(sorted(strata, key=exposure), cells, chance, relations)


def flat(k: Knowledge) -> dict[str, dict]:
    """``{arch: {model: {measure: {stratum: score}}}}`` (4 digits): metrics/report.json's ``knowledge``,
    ``knowledge.<arch>.<model>.<measure>.<stratum>`` in ``dvc exp show``."""
    out: dict[str, dict] = {}
    for (arch, model, measure), row in k.cells.items():
        by_stratum = {s: round(row[s].value, 4) for s in k.strata if s in row}
        out.setdefault(arch, {}).setdefault(model, {})[measure] = by_stratum
    return out


__all__ = [
    "MEASURES",
    "MEASURE_LABEL",
    "PANELS",
    "RELATIONS",
    "Knowledge",
    "build_knowledge",
    "exposure",
    "flat",
]
