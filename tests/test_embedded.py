"""The embedded suite: real schemas, sizes, determinism, and held-out tasks kept out of training data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from flanmoe.data.embedded import (
    CATEGORIES,
    HELDOUT_TASKS,
    INSTRUCTION_FAMILIES,
    TEMPLATE_TYPES,
    EmbeddedConfig,
    EmbeddedSuite,
    build_suite,
    summarize,
)
from flanmoe.data.embedded.families import FAMILIES
from flanmoe.data.embedded.heldout_mmlu import people_subjects

SMALL = {
    "pretrain_mb": 0.05,
    "it_people": 4,
    "heldout_people": 4,
    "bio_exposures": [1, 2],
    "flan_per_family": 8,
    "fewshot_k": 1,
    "mmlu_per_subject": 4,
    "mmlu_val_per_subject": 2,
    "bbh_per_task": 4,
    "finetune_train": 8,
    "finetune_eval": 4,
}


@pytest.fixture(scope="module")
def suite() -> EmbeddedSuite:
    return build_suite(EmbeddedConfig(**SMALL))


def suite_digest(s: EmbeddedSuite) -> str:
    """sha256 over every row of every dataset, in order."""
    h = hashlib.sha256()
    parts = [("pretrain", s.pretrain), ("flan", s.flan)]
    parts += [(f"mmlu/{k}", d) for k, d in s.mmlu.items()] + [(f"bbh/{k}", d) for k, d in s.bbh.items()]
    parts += [(f"ft/{t}/{k}", d) for t, dd in s.finetune.items() for k, d in dd.items()]
    for name, ds in parts:
        h.update(name.encode())
        h.update(json.dumps(ds.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def test_counts_of_families_categories_and_heldout_tasks():
    assert len(INSTRUCTION_FAMILIES) >= 40
    assert len(CATEGORIES) >= 6
    assert all(len(f.templates) >= 3 for f in FAMILIES)
    assert (
        len(HELDOUT_TASKS["mmlu"]) >= 6
        and len(HELDOUT_TASKS["bbh"]) >= 8
        and len(HELDOUT_TASKS["finetune"]) >= 3
    )


def test_schemas(suite):
    assert suite.pretrain.column_names == ["text", "timestamp", "url", "salient_spans"]
    assert all(len(t) == 20 and t.endswith("Z") and t[10] == "T" for t in suite.pretrain["timestamp"])
    assert suite.flan.column_names == ["inputs", "targets", "task_source", "task_name", "template_type"]
    assert set(suite.flan["template_type"]) == set(TEMPLATE_TYPES)
    assert Counter(suite.flan["task_name"]) == {f: SMALL["flan_per_family"] for f in INSTRUCTION_FAMILIES}
    assert all(t.strip() for t in suite.flan["targets"])
    assert set(suite.mmlu) == {"dev", "validation", "test"}
    for split, ds in suite.mmlu.items():
        assert ds.column_names == ["question", "subject", "choices", "answer"]
        per = {"dev": 5, "validation": SMALL["mmlu_val_per_subject"], "test": SMALL["mmlu_per_subject"]}[
            split
        ]
        # people subjects: every fact of the stratum's held-out people in test, IT people's in dev/val
        people = {"dev": 5, "validation": SMALL["mmlu_val_per_subject"], "test": 2 * 5}[split]
        assert Counter(ds["subject"]) == {
            **{s: per for s in HELDOUT_TASKS["mmlu"]},
            **{s: people for s in people_subjects(SMALL["bio_exposures"])},
        }
        for row in ds:
            assert len(row["choices"]) == len(set(row["choices"])) == 4 and row["answer"] in range(4)
    assert set(suite.bbh) == set(HELDOUT_TASKS["bbh"])
    for ds in suite.bbh.values():
        assert ds.column_names == ["input", "target"] and len(ds) == SMALL["bbh_per_task"]
    assert set(suite.finetune) == set(HELDOUT_TASKS["finetune"])
    for task, dd in suite.finetune.items():
        assert set(dd) == {"train", "validation", "test"}
        for ds in dd.values():
            assert ds.column_names == ["inputs", "targets", "task_name"] and set(ds["task_name"]) == {task}
        assert not set(dd["test"]["inputs"]) & set(dd["train"]["inputs"])


def test_fewshot_has_k_exemplars():
    s = build_suite(
        EmbeddedConfig(**{**SMALL, "fewshot_k": 2, "fewshot_fraction": 1.0, "options_fraction": 0.0})
    )
    assert set(s.flan["template_type"]) == {"fs_noopt"}
    row = next(r for r in s.flan if r["task_name"] == "addition")
    assert row["inputs"].count("\n\n") == 2  # two exemplars, then the query


def test_same_seed_same_bytes_other_seed_differs(suite):
    assert suite_digest(build_suite(EmbeddedConfig(**SMALL))) == suite_digest(suite)
    assert suite_digest(build_suite(EmbeddedConfig(**SMALL, seed=7))) != suite_digest(suite)


def test_output_does_not_depend_on_hash_seed(suite):
    code = (
        "import sys; from tests.test_embedded import SMALL, suite_digest; "
        "from flanmoe.data.embedded import build_suite, EmbeddedConfig; "
        "print(suite_digest(build_suite(EmbeddedConfig(**SMALL))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == suite_digest(suite)


def test_heldout_tasks_never_in_mixture_or_corpus():
    s = build_suite(EmbeddedConfig(**{**SMALL, "pretrain_mb": 0.5, "flan_per_family": 40}))
    heldout = {t for ts in HELDOUT_TASKS.values() for t in ts}
    assert not heldout & set(s.flan["task_name"])
    flan_text = "\n\x00".join(s.flan["inputs"])
    corpus = "\n\x00".join(s.pretrain["text"])
    # people subjects' dev and validation questions ask IT people, as the mixture does, by design
    probes = [
        q
        for split, ds in s.mmlu.items()
        for q, subj in zip(ds["question"], ds["subject"], strict=True)
        if split == "test" or not subj.startswith("people_")
    ]
    probes += [x for ds in s.bbh.values() for x in ds["input"]]
    probes += [x for dd in s.finetune.values() for ds in dd.values() for x in ds["inputs"]]
    leaks = [p for p in probes if p in flan_text or p in corpus]
    assert not leaks, leaks[:5]


def test_config_validation():
    with pytest.raises(ValidationError, match="task_fraction: real_fraction"):
        EmbeddedConfig(real_fraction=0.7, task_fraction=0.5)
    with pytest.raises(ValidationError):
        EmbeddedConfig(pretrain_mb=0)
    with pytest.raises(ValidationError):
        EmbeddedConfig(pretrain_mbb=1.0)


@pytest.mark.parametrize(
    "knobs",
    [{"world_size": 4}, {"list_len": 10, "bbh_steps": 8, "max_operand": 3}, {"fewshot_k": 5, "bbh_steps": 1}],
)
def test_difficulty_knobs_at_their_limits_still_build(knobs):
    s = build_suite(EmbeddedConfig(**{**SMALL, **knobs}))
    assert len(s.flan) == SMALL["flan_per_family"] * len(INSTRUCTION_FAMILIES)
    assert all(len(ds) == SMALL["bbh_per_task"] for ds in s.bbh.values())
    assert all(
        len(dd["test"]) > 0 and len(dd["train"]) == SMALL["finetune_train"] for dd in s.finetune.values()
    )


def test_summarize(suite):
    sizes = summarize(suite)
    assert sizes["flan_families"] == len(INSTRUCTION_FAMILIES) and sizes["flan_categories"] == len(CATEGORIES)
    assert (
        sizes["mmlu_dev_rows"] == 5 * (len(HELDOUT_TASKS["mmlu"]) + 2) and 0.05 <= sizes["pretrain_mb"] < 0.2
    )
