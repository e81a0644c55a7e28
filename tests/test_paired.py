"""Paired differences on the held-out people (flanmoe/report/paired.py), from per-question records."""

from __future__ import annotations

import numpy as np
import pytest

from flanmoe.report.paired import answers, paired_rows
from flanmoe.report.power import paired_difference, seed_interval


def records(correct: dict[str, list[int]], suite: str = "probe", mode: str = "cloze") -> list[dict]:
    """One model's records: per stratum, question i answered ``correct[stratum][i]``."""
    return [
        {"suite": suite, "mode": mode, "task": stratum, "prompt": f"{stratum} q{i}", "correct": bool(c)}
        for stratum, cs in correct.items()
        for i, c in enumerate(cs)
    ]


def test_answers_keeps_the_knowledge_measures_per_stratum():
    recs = records({"people_x4": [1, 0]}) + records({"people_x4": [0]}, "mmlu", "zero_shot")
    recs += records({"zoology": [1]}, "mmlu", "zero_shot") + records({"people_x4": [1]}, "mmlu", "few_shot")
    got = answers(recs)
    assert got == {
        ("cloze", "people_x4"): {("people_x4 q0", 0): 1.0, ("people_x4 q1", 0): 0.0},
        ("mmlu", "people_x4"): {("people_x4 q0", 0): 0.0},
    }
    # the held-out suites' parser: a prompt asked twice is two questions; a row lacking a key is named
    twice = records({"people_x4": [1]}) * 2
    assert answers(twice) == {("cloze", "people_x4"): {("people_x4 q0", 0): 1.0, ("people_x4 q0", 1): 1.0}}
    with pytest.raises(ValueError, match=r"evals/x.jsonl: row 2 \(probe\) lacks correct"):
        answers([twice[0], {k: v for k, v in twice[1].items() if k != "correct"}], "evals/x.jsonl")


def test_one_seed_is_a_paired_bootstrap_over_the_same_questions():
    rng = np.random.default_rng(0)
    pt = rng.integers(0, 2, 200)
    it = np.where(rng.random(200) < 0.2, 1 - pt, pt)  # the same questions, a few flipped
    by_model = {
        "d-pretrain": [records({"people_x4": list(pt)})],
        "d-instruct": [records({"people_x4": list(it)})],
    }
    (row,) = paired_rows(by_model, ["d"], [], ["people_x4"])
    assert (row.a, row.b, row.measure) == ("d-instruct", "d-pretrain", "cloze")
    order = sorted(range(200), key=lambda i: f"people_x4 q{i}")  # questions are matched by prompt
    expected = paired_difference((it[order].astype(float), pt[order].astype(float)))
    assert row.cells["people_x4"] == expected
    # pairing: tighter than the two scores' own spread would suggest
    assert row.cells["people_x4"].hi - row.cells["people_x4"].lo < 0.2


def test_several_seeds_give_the_t_interval_of_per_seed_differences_and_moe_minus_dense():
    seeds_moe = [[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    seeds_dense = [[1, 0, 0, 1], [0, 0, 0, 1], [1, 1, 0, 0]]
    by_model = {
        "s-pretrain": [records({"people_x4": s}) for s in seeds_moe],
        "d-pretrain": [records({"people_x4": s}) for s in seeds_dense],
    }
    rows = paired_rows(by_model, ["s", "d"], [("s", "d")], ["people_x4", "people_x9"])
    assert [(r.a, r.b, r.measure) for r in rows] == [("s-pretrain", "d-pretrain", "cloze")]
    diffs = [np.mean(a) - np.mean(b) for a, b in zip(seeds_moe, seeds_dense, strict=True)]
    assert rows[0].cells == {"people_x4": seed_interval(diffs)}  # no records for people_x9: no cell
    assert rows[0].cells["people_x4"].value == pytest.approx((0.25 + 0.25 + 0.5) / 3)


def test_models_with_different_seeds_are_paired_over_the_seeds_both_have():
    """base.extra_seeds: dense has seeds 1, 2, 7, 8, switch 1, 2 only; their difference pairs seeds 1
    and 2, dense's own IT - PT all four; a list per model is the same seeds by position."""
    per_seed = {1: [1, 0, 0, 1], 2: [0, 0, 0, 1], 7: [1, 1, 1, 1], 8: [0, 0, 0, 0]}
    by_model = {
        "d-pretrain": {s: records({"people_x4": c}) for s, c in per_seed.items()},
        "d-instruct": {s: records({"people_x4": [1, 1, 0, 1]}) for s in per_seed},
        "s-pretrain": {s: records({"people_x4": [1, 1, 1, 1]}) for s in (2, 1)},
    }
    rows = {(r.a, r.b): r for r in paired_rows(by_model, ["d"], [("s", "d")], ["people_x4"])}
    moe = rows[("s-pretrain", "d-pretrain")].cells["people_x4"]
    assert moe == seed_interval([1 - 0.5, 1 - 0.25])  # seeds 2, 1 in the first model's order
    it = rows[("d-instruct", "d-pretrain")].cells["people_x4"]
    assert it == seed_interval([0.75 - np.mean(c) for c in per_seed.values()])
    assert paired_rows({**by_model, "s-pretrain": {9: records({"people_x4": [1]})}}, [], [("s", "d")],
                       ["people_x4"]) == []  # fmt: skip


def test_a_record_lacking_a_key_is_named_by_model_and_seed():
    bad = records({"people_x4": [1, 0]})
    del bad[1]["correct"]
    by_model = {"d-pretrain": {3: bad}, "d-instruct": {3: records({"people_x4": [1, 1]})}}
    with pytest.raises(ValueError, match=r"records of d-pretrain, seed 3: row 2 \(probe\) lacks correct"):
        paired_rows(by_model, ["d"], [], ["people_x4"])
