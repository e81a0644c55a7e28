"""Chance levels of real BBH tasks from their answer space (flanmoe.eval.answer_space): options listed
in the input, a small label set, or free-form; on the real file layout, a guesser at chance scores a
normalized ~0 (and would score far above 0 against the old chance of 0)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from flanmoe.data.sources import SourceSpec, load_source
from flanmoe.eval import suites
from flanmoe.eval.answer_space import label_count, option_count, task_chance
from flanmoe.eval.suites import EvalSettings, Evaluator

# every example's possible answers, written out by hand from tests/fixtures/bbh_answer_space/ (the
# files of tests/fixtures/make_fixtures.py BBH_ANSWER_SPACES), and the basis each task's chance has
LETTERS = ["(A)", "(B)", "(C)", "(D)", "(E)", "(F)"]
SPACES: dict[str, tuple[list[list[str]], str]] = {
    "date_understanding": ([LETTERS, LETTERS[:5], LETTERS], "options"),
    "logical_deduction_three_objects": ([LETTERS[:3]] * 2, "options"),
    "navigate": ([["Yes", "No"]] * 3, "options"),
    "formal_fallacies": ([["valid", "invalid"]] * 2, "options"),
    "boolean_expressions": ([["True", "False"]] * 4, "labels"),
    "web_of_lies": ([["Yes", "No"]] * 4, "labels"),
    "word_sorting": ([[]] * 3, "free_form"),
    "multistep_arithmetic_two": ([[]] * 3, "free_form"),
}


def _chance(space: list[list[str]]) -> float:
    return sum(1 / len(c) if c else 0.0 for c in space) / len(space)


def test_option_count_reads_the_real_option_blocks():
    assert option_count("Q?\nOptions:\n(A) 12/14/2026\n(B) 12/14/1950\n(C) 12/14/2007") == 3
    assert option_count("Take 2 steps.\nOptions:\n- Yes\n- No") == 2
    assert option_count("deductively valid or invalid?\nOptions:\n- valid \n- invalid") == 2
    assert option_count("Which is sarcastic? Options: (A) Great, rain again (B) Nice weather") == 2
    assert option_count("Which one?\n(A) red\n(B) green\n(C) blue\n(D) gold") == 4  # no header
    assert option_count("not ( True ) and ( True ) is") == 0
    assert option_count("Is (A) a letter?") == 0  # one marker is no option list
    assert option_count("Options:\n- only one") == 0


def test_label_count_needs_a_small_repeated_set():
    assert label_count(["True", "False", "False", "True"], max_labels=16) == 2
    assert label_count([" Yes", "No ", "Yes", "No", "No"], max_labels=16) == 2  # stripped
    assert label_count(["bat hat rat", "cask pewee", "a b"], max_labels=16) == 0  # each seen once
    assert label_count([str(i % 5) for i in range(20)], max_labels=4) == 0  # above max_labels
    assert label_count(["x"] * 6, max_labels=16) == 0  # one value is no choice


def test_task_chance_per_example_and_mixed():
    inputs = ["Q\nOptions:\n(A) a\n(B) b", "Q\nOptions:\n(A) a\n(B) b\n(C) c\n(D) d"]
    assert task_chance(inputs, ["(A)", "(B)"], 16) == (pytest.approx((1 / 2 + 1 / 4) / 2), "options")
    # options where the input lists them, the task's labels elsewhere
    mixed = ["Q\nOptions:\n- yes\n- no\n- maybe", "Q", "Q", "Q"]
    chance, basis = task_chance(mixed, ["yes", "no", "yes", "no"], 16)
    assert chance == pytest.approx((1 / 3 + 3 / 2) / 4) and basis == "labels+options"
    assert task_chance(["a", "b"], ["x", "y"], 16) == (0.0, "free_form")


def _real_bbh(root, tasks):
    spec = SourceSpec(kind="local", path=str(root / "{config}.json"), field="examples", configs=tasks)
    return load_source("bbh", spec, seed=0)


def test_each_kind_of_answer_space_on_the_real_files(fixtures):
    root = fixtures / "bbh_answer_space"
    raw = json.loads((root / "navigate.json").read_text())
    assert set(raw) == {"canary", "examples"}  # the original repository's layout
    tasks = _real_bbh(root, sorted(SPACES))
    for task, (space, basis) in SPACES.items():
        ds = tasks[task]
        assert len(ds) == len(space), task
        got = task_chance(list(ds["input"]), list(ds["target"]), max_labels=16)
        assert got == (pytest.approx(_chance(space)), basis), task
        for target, options in zip(ds["target"], space, strict=True):
            assert not options or target in options  # the table above is the files' answer space
    assert _chance(SPACES["date_understanding"][0]) == pytest.approx((1 / 6 + 1 / 5 + 1 / 6) / 3)


class _CharTokenizer:
    """One id per character (+ eos 1): enough for the BBH scorer's encode / decode."""

    def encode_batch(self, texts):
        return [SimpleNamespace(ids=[ord(c) + 2 for c in t] + [1]) for t in texts]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 2) for i in ids if i > 1)


def _score_a_guesser(monkeypatch, tasks, chance, seed: int = 0):
    """Evaluator.bbh with a predictor that draws uniformly from each example's answer space (from
    ``SPACES``, not from the code under test); free-form tasks get a wrong answer."""
    rng = random.Random(seed)
    space_of = {}
    for task, (space, _) in SPACES.items():
        for text, options in zip(tasks[task]["input"], space * (len(tasks[task]) // len(space)), strict=True):
            space_of[text] = options
    tok = _CharTokenizer()

    def guess(model, prompts, max_new_tokens, batch_size, hook=None):
        out = []
        for ids in prompts:
            options = space_of[tok.decode(ids)]
            answer = rng.choice(options) if options else "no idea"
            out.append([ord(c) + 2 for c in answer])
        return out

    monkeypatch.setattr(suites, "generate", guess)
    model = SimpleNamespace(cfg=SimpleNamespace(moe=None))
    ev = Evaluator(model, tok, EvalSettings(bootstrap=200, max_input_length=4096))
    return ev.bbh(tasks, shots=0, chance=chance)


def test_a_guesser_at_chance_scores_normalized_zero(fixtures, tmp_path, monkeypatch):
    """Each task's examples repeated 150 times, in the real layout: a uniform guesser's normalized
    score is ~0 per task and overall; with the chance of 0 real BBH used to get, it looked far better.
    (Free-form tasks are not repeated: a few answers seen many times would be a label set.)"""
    for task, (space, _) in SPACES.items():
        raw = json.loads((fixtures / "bbh_answer_space" / f"{task}.json").read_text())
        raw["examples"] = raw["examples"] * (150 if any(space) else 1)
        (tmp_path / f"{task}.json").write_text(json.dumps(raw))
    tasks = _real_bbh(tmp_path, sorted(SPACES))
    res = _score_a_guesser(monkeypatch, tasks, chance=None)
    s = res.summary
    for task, (space, basis) in SPACES.items():
        t = s["tasks"][task]
        assert t["chance"] == pytest.approx(_chance(space), abs=1e-6) and t["chance_basis"] == basis
        assert t["normalized_lo"] <= 0 <= t["normalized_hi"], (task, t)
    assert s["chance"] == pytest.approx(sum(_chance(v[0]) for v in SPACES.values()) / len(SPACES), abs=1e-6)
    assert abs(s["normalized"]) < 4 and s["normalized_lo"] <= 0 <= s["normalized_hi"]
    # the same guesses against chance 0 (a table without these tasks): the inflated score of before
    before = _score_a_guesser(monkeypatch, tasks, chance={})
    assert before.summary["score"] == s["score"]
    assert before.summary["chance"] == 0 and before.summary["normalized"] > 25
    assert all("chance_basis" not in t for t in before.summary["tasks"].values())
