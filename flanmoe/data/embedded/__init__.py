"""The embedded offline data suite: built deterministically from a seed, in the real schemas.

``build_suite(EmbeddedConfig())`` returns the pretraining corpus (C4 schema), the FLAN-like
instruction mixture (FLAN schema), the held-out MMLU- and BBH-schema suites, single-task
fine-tuning sets and the knowledge probe. Held-out tasks never appear in the mixture or the corpus
(see ``HELDOUT_TASKS``); held-out people's facts appear only in the corpus's biographies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flanmoe.data.config import EmbeddedConfig  # noqa: F401 (re-exported: params live there)
from flanmoe.data.embedded.bbh import BBH_TASKS, build_bbh
from flanmoe.data.embedded.corpus import build_corpus
from flanmoe.data.embedded.families import FAMILIES, GenContext
from flanmoe.data.embedded.families.knowledge import PERSON_FAMILIES
from flanmoe.data.embedded.families.translation import build_lexicon
from flanmoe.data.embedded.finetune import FINETUNE_TASKS, build_finetune
from flanmoe.data.embedded.heldout_mmlu import MMLU_SUBJECTS, PROBE_COLUMNS, build_mmlu
from flanmoe.data.embedded.mixture import TEMPLATE_TYPES, build_mixture
from flanmoe.data.embedded.world import World, build_world

if TYPE_CHECKING:  # imported where a suite is built: CHANCE and the task lists need no datasets
    import datasets

# family name -> category, in mixture order
INSTRUCTION_FAMILIES: dict[str, str] = {f.name: f.category for f in FAMILIES}
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(INSTRUCTION_FAMILIES.values()))
# held-out suite -> its task names; none of them is an instruction family
HELDOUT_TASKS: dict[str, tuple[str, ...]] = {
    "mmlu": MMLU_SUBJECTS,
    "bbh": tuple(BBH_TASKS),
    "finetune": tuple(FINETUNE_TASKS),
}
assert not set(INSTRUCTION_FAMILIES) & {t for ts in HELDOUT_TASKS.values() for t in ts}
# score of a uniform guess among a task's answers (0 where the answer is open-ended): report it
# next to every score, as DESIGN.md asks
CHANCE: dict[str, dict[str, float]] = {
    "mmlu": dict.fromkeys(MMLU_SUBJECTS, 0.25),
    "bbh": {
        "boolean_expressions": 0.5,
        "date_understanding": 0.2,
        "dyck_languages": 0.0,
        "multistep_arithmetic_two": 0.0,
        "navigate": 0.5,
        "object_counting": 0.0,
        "tracking_shuffled_objects_three_objects": 1 / 3,
        "word_sorting": 0.0,
    },
    "finetune": {"fact_verification": 0.5, "list_sum": 0.0, "entity_typing": 0.2, "acronym": 0.0},
}
assert all(set(CHANCE[k]) == set(HELDOUT_TASKS[k]) for k in CHANCE)


@dataclass
class EmbeddedSuite:
    """Every dataset of the suite, in the schemas of the real sources."""

    pretrain: datasets.Dataset  # text, timestamp, url (allenai/c4)
    flan: datasets.Dataset  # inputs, targets, task_source, task_name, template_type
    mmlu: datasets.DatasetDict  # dev, validation, test: question, subject, choices, answer (cais/mmlu)
    bbh: dict[str, datasets.Dataset]  # task -> input, target (lukaemon/bbh, split test)
    finetune: dict[str, datasets.DatasetDict]  # task -> train/validation/test: inputs, targets, task_name
    probe: datasets.DatasetDict  # test: subject, prefix, suffix, question, choices, answer (held-out people)


def _mmlu_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "question": datasets.Value("string"),
            "subject": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "answer": datasets.Value("int64"),
        }
    )


def _probe_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            **{k: datasets.Value("string") for k in PROBE_COLUMNS if k not in ("choices", "answer")},
            "choices": datasets.Sequence(datasets.Value("string")),
            "answer": datasets.Value("int64"),
        }
    )


def _strings(cols: dict[str, list]) -> datasets.Dataset:
    """A dataset of string columns (explicit features, so empty columns keep their type); a
    ``salient_spans`` column holds int32 offsets."""
    import datasets

    features = {k: datasets.Value("string") for k in cols}
    if "salient_spans" in cols:
        features["salient_spans"] = datasets.Sequence(datasets.Value("int32"))
    return datasets.Dataset.from_dict(cols, features=datasets.Features(features))


def world_of(cfg: EmbeddedConfig) -> World:
    """The world ``cfg`` describes (its entities, and its people with their strata)."""
    return build_world(cfg.seed, cfg.world_size, cfg.it_people, cfg.heldout_people, tuple(cfg.bio_exposures))


def build_suite(cfg: EmbeddedConfig) -> EmbeddedSuite:
    """Generate the whole suite from ``cfg`` (deterministic, offline, a few seconds at defaults)."""
    import datasets

    world = world_of(cfg)
    world_names = {e.name.lower() for es in world.entities.values() for e in es}
    ctx = GenContext(world, build_lexicon(cfg.seed, world_names), cfg.max_operand, cfg.list_len)
    corpus = build_corpus(
        ctx, cfg.seed, int(cfg.pretrain_mb * 1e6), cfg.real_fraction, cfg.task_fraction, cfg.it_qa_per_person
    )
    flan = build_mixture(
        ctx,
        cfg.seed,
        cfg.flan_per_family,
        cfg.fewshot_k,
        cfg.fewshot_fraction,
        cfg.options_fraction,
        cfg.letter_fraction,
        dict.fromkeys(PERSON_FAMILIES, cfg.people_qa_per_family or cfg.flan_per_family),
    )
    mmlu, probe = build_mmlu(world, cfg.seed, cfg.mmlu_per_subject, cfg.mmlu_val_per_subject)
    bbh = build_bbh(cfg.seed, cfg.bbh_per_task, cfg.bbh_steps)
    finetune = build_finetune(world, cfg.seed, cfg.finetune_train, cfg.finetune_eval, cfg.max_operand)
    return EmbeddedSuite(
        pretrain=_strings(corpus),
        flan=_strings(flan),
        mmlu=datasets.DatasetDict(
            {s: datasets.Dataset.from_dict(c, features=_mmlu_features()) for s, c in mmlu.items()}
        ),
        bbh={t: _strings(c) for t, c in bbh.items()},
        finetune={
            t: datasets.DatasetDict({s: _strings(c) for s, c in d.items()}) for t, d in finetune.items()
        },
        probe=datasets.DatasetDict({"test": datasets.Dataset.from_dict(probe, features=_probe_features())}),
    )


def summarize(suite: EmbeddedSuite) -> dict[str, float]:
    """Flat sizes of a suite (for a stage's metrics JSON): rows per part, corpus MB, families."""
    out: dict[str, float] = {
        "pretrain_docs": len(suite.pretrain),
        "pretrain_mb": round(sum(len(t.encode("utf-8")) for t in suite.pretrain["text"]) / 1e6, 3),
        "flan_rows": len(suite.flan),
        "flan_families": len(set(suite.flan["task_name"])),
        "flan_categories": len({INSTRUCTION_FAMILIES.get(t, t) for t in set(suite.flan["task_name"])}),
    }
    out.update({f"mmlu_{split}_rows": len(ds) for split, ds in suite.mmlu.items()})
    out["bbh_rows"] = sum(len(ds) for ds in suite.bbh.values())
    for split in ("train", "validation", "test"):
        out[f"finetune_{split}_rows"] = sum(len(dd[split]) for dd in suite.finetune.values())
    return out


__all__ = [
    "CATEGORIES",
    "CHANCE",
    "HELDOUT_TASKS",
    "INSTRUCTION_FAMILIES",
    "TEMPLATE_TYPES",
    "EmbeddedConfig",
    "EmbeddedSuite",
    "build_suite",
    "summarize",
    "world_of",
]
