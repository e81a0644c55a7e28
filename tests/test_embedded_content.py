"""The embedded suite's content is right: answers are correct, held-out facts are in the corpus."""

from __future__ import annotations

import random
import re

import pytest

from flanmoe.data.embedded import EmbeddedConfig, build_suite, world_of
from flanmoe.data.embedded.bbh import BBH_TASKS, navigate
from flanmoe.data.embedded.corpus import UNIT_FACTS, build_corpus
from flanmoe.data.embedded.families import FAMILIES, GenContext
from flanmoe.data.embedded.families.classification import BRACKETS
from flanmoe.data.embedded.families.translation import build_lexicon, caesar, pig_latin
from flanmoe.data.embedded.mixture import LETTERS, render, render_fewshot
from flanmoe.data.embedded.world import HELDOUT_RELATIONS, build_world
from flanmoe.eval.prompts import listed_options


@pytest.fixture(scope="module")
def ctx() -> GenContext:
    return GenContext(build_world(3, 12), build_lexicon(3), 20, 4)


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_family_examples_render_and_answer_is_an_option(fam, ctx):
    rng = random.Random(0)
    for _ in range(20):
        ex = fam.generate(rng, ctx)
        assert ex.answer and ex.answer in ex.options and len(set(ex.options)) == len(ex.options) >= 2
        for t in fam.templates:
            for style in ("none", "dash", "letter"):
                inputs, target = render(t, ex, style)
                assert not re.search(r"\{[A-Za-z_]+\}", inputs)  # every field filled
                assert target == ex.answer or f"\n{target} {ex.answer}" in inputs
                # the evaluate stage reads the options back (held-in format): exactly those offered
                offered = {
                    "none": None,
                    "dash": list(ex.options),
                    "letter": [f"({c})" for c in LETTERS[: len(ex.options)]],
                }
                assert listed_options(inputs) == offered[style]
                fewshot, _ = render_fewshot(t, [ex, ex], ex, style)  # exemplars' blocks are not the query's
                assert listed_options(fewshot) == offered[style]
        if fam.category != "reading_comprehension":  # its raw material is the passage alone
            assert ex.answer in fam.plain_text(ex)


def test_codes():
    assert pig_latin("string") == "ingstray" and pig_latin("apple") == "appleway"
    assert caesar("zoo") == "app"


def _dyck_closes(seq: list[str]) -> bool:
    stack = []
    for b in seq:
        if b in BRACKETS:
            stack.append(b)
        elif not stack or BRACKETS[stack.pop()] != b:
            return False
    return not stack


def _walk(text: str) -> str:
    x = y = 0
    face = 1
    dirs = {"forward": (0, 1), "backward": (0, -1), "left": (-1, 0), "right": (1, 0)}
    for sent in text.split("?", 1)[1].split("\n")[0].split("."):
        m = re.match(r"\s*Take (\d+) steps?(?: (\w+))?", sent)
        if "Turn around" in sent:
            face = -face
        elif m:
            dx, dy = dirs[m.group(2)] if m.group(2) else (0, face)
            x, y = x + int(m.group(1)) * dx, y + int(m.group(1)) * dy
    return "Yes" if x == y == 0 else "No"


@pytest.mark.parametrize("name", sorted(BBH_TASKS))
def test_bbh_targets_are_correct(name):
    rng = random.Random(1)
    for _ in range(50):
        inp, tgt = BBH_TASKS[name](rng, 2)
        if name == "boolean_expressions":
            assert tgt == str(eval(inp.removesuffix(" is")))
        elif name == "multistep_arithmetic_two":
            assert tgt == str(eval(inp.removesuffix(" =")))
        elif name == "word_sorting":
            assert tgt.split() == sorted(inp.split("List: ")[1].split())
        elif name == "dyck_languages":
            assert _dyck_closes(inp.split("Input: ")[1].split() + tgt.split())
        elif name == "navigate":
            assert tgt == _walk(inp)
        elif name == "object_counting":
            assert int(tgt) >= 1
        else:  # options tasks: the target names one listed option
            assert re.fullmatch(r"\([A-F]\)", tgt) and f"\n{tgt} " in inp
    yes = sum(navigate(rng, 2)[1] == "Yes" for _ in range(400))
    assert 100 < yes < 300  # both answers are common


def test_mmlu_skill_answers_are_correct():
    s = build_suite(
        EmbeddedConfig(
            pretrain_mb=0.01,
            flan_per_family=1,
            mmlu_per_subject=30,
            bbh_per_task=1,
            finetune_train=1,
            finetune_eval=1,
        )
    )
    units = {plural: per for _, plural, _, per in UNIT_FACTS}
    for row in s.mmlu["test"]:
        q, ans = row["question"], row["choices"][row["answer"]]
        if row["subject"] == "elementary_mathematics":
            assert ans == str(eval(q.removeprefix("What is ").removesuffix("?")))
        elif row["subject"] == "measurement":
            n, plural = re.search(r"(\d+) (\w+)(?:\?| make)", q).groups()
            assert int(ans) == int(n) * units[plural]


def test_default_corpus_size_and_heldout_facts_stated_in_it():
    cfg = EmbeddedConfig()
    world = world_of(cfg)
    ctx = GenContext(world, build_lexicon(cfg.seed), cfg.max_operand, cfg.list_len)
    corpus = build_corpus(ctx, cfg.seed, int(cfg.pretrain_mb * 1e6), cfg.real_fraction, cfg.task_fraction)
    text = "\n".join(corpus["text"])
    assert 5e6 <= len(text.encode()) <= 5.1e6
    low = text.lower()
    for rel in HELDOUT_RELATIONS:  # every fact the MMLU-style suite asks is in the corpus, several times
        for ent in world.of(rel.kind):
            said = [t.format(s=ent.name, o=ent.attrs[rel.attr]).lower() for t in rel.statements]
            said = [re.sub(r"\ba (?=[aeiou])", "an ", s.rstrip(".")) for s in said]
            assert sum(low.count(s) for s in said) >= 5, (rel.attr, ent.name)


def test_finetune_test_entities_unseen_in_train():
    s = build_suite(EmbeddedConfig(pretrain_mb=0.01, flan_per_family=1, mmlu_per_subject=1, bbh_per_task=1))
    pat = re.compile(r"^(?:What kind of thing is |Is )?(.+?)(?::| a country| is the name of)")
    dd = s.finetune["entity_typing"]
    names = {split: {pat.match(x).group(1) for x in dd[split]["inputs"]} for split in dd}
    assert names["test"] and not names["test"] & names["train"] and not names["validation"] & names["train"]
    facts = s.finetune["fact_verification"]
    assert not set(facts["test"]["inputs"]) & set(facts["train"]["inputs"])
