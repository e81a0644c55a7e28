"""Held-out people: their facts only in the corpus's biographies, the mixture asks IT people only,
biographies in the form that makes facts extractable, strata, the probe paired with the questions."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from flanmoe.data.embedded import EmbeddedConfig, build_suite, world_of
from flanmoe.data.embedded.people import BIO_TAG, PERSON_RELATIONS, biography, subject
from flanmoe.data.embedded.vocab import fix_articles

CFG = {
    "pretrain_mb": 0.2,
    "flan_per_family": 60,
    "fewshot_k": 1,
    "mmlu_per_subject": 4,
    "mmlu_val_per_subject": 2,
    "bbh_per_task": 4,
    "finetune_train": 40,
    "finetune_eval": 10,
    "it_people": 6,
    "heldout_people": 6,
    "bio_exposures": [2, 5],
}


@pytest.fixture(scope="module")
def suite():
    return build_suite(EmbeddedConfig(**CFG))


@pytest.fixture(scope="module")
def world():
    return world_of(EmbeddedConfig(**CFG))


def test_relations_have_many_wordings_and_small_independent_pools(world):
    for rel in PERSON_RELATIONS:
        assert len(set(rel.statements)) >= 10 and len(set(rel.questions)) >= 4
        assert all(t.startswith("{s}") or "{s}" in t for t in rel.statements)
        pool = world.pools[rel.attr]
        assert 10 <= len(pool) <= 16, (rel.attr, len(pool))
    # every person has all five attributes, drawn independently: no value pins another
    people = world.people.all
    assert all(set(p.attrs) == {r.attr for r in PERSON_RELATIONS} for p in people)
    names = [p.name for p in people]
    assert len(set(names)) == len(names)


def test_default_world_asks_at_least_1000_heldout_facts():
    cfg = EmbeddedConfig()
    w = world_of(cfg)
    assert len(w.people.heldout) * len(PERSON_RELATIONS) >= 1000
    assert {w.people.exposure[p.name] for p in w.people.heldout} == set(cfg.bio_exposures)


def test_biography_states_every_fact_with_the_full_name_and_marks_values(world):
    rng = __import__("random").Random(0)
    person = world.people.heldout[0]
    wordings = set()
    for _ in range(30):
        text, spans = biography(person, rng)
        assert text.startswith(BIO_TAG)
        sentences = re.split(r"(?<=\.) ", text[len(BIO_TAG) + 1 :])
        assert len(sentences) == len(PERSON_RELATIONS)
        assert all(person.name in s for s in sentences)
        values = [text[a:b] for a, b in zip(spans[::2], spans[1::2], strict=True)]
        assert sorted(v.lower() for v in values) == sorted(v.lower() for v in person.attrs.values())
        wordings.add(text)
    assert len(wordings) == 30  # a fresh wording and order each time


def test_heldout_people_only_in_biographies_and_never_in_the_mixture(suite):
    people = suite_people(suite)
    flan = "\n".join(suite.flan["inputs"]) + "\n" + "\n".join(suite.flan["targets"])
    for p in people.heldout:
        assert p.name not in flan  # not even the name: discoverers are IT people
    assert any(p.name in flan for p in people.it)
    bios = Counter()
    for text, url in zip(suite.pretrain["text"], suite.pretrain["url"], strict=True):
        if url.startswith("https://people.embedded/"):
            bios[url.split("/")[3].replace("_", " ")] += 1
        else:  # held-out people are named nowhere else (IT people are, as elements' discoverers)
            assert not [p.name for p in people.heldout if p.name in text], url
    assert bios == {p.name: people.exposure[p.name] for p in people.all}


def test_fact_verification_asks_no_heldout_person(suite):
    people = suite_people(suite)
    text = "\n".join(x for ds in suite.finetune["fact_verification"].values() for x in ds["inputs"])
    assert not [p.name for p in people.heldout if p.name in text]


def test_people_subjects_and_the_probe_pair_fact_by_fact(suite):
    people = suite_people(suite)
    test = suite.mmlu["test"]
    rows = [r for r in test if r["subject"].startswith("people_")]
    probe = suite.probe["test"]
    assert len(probe) == len(rows) == len(people.heldout) * len(PERSON_RELATIONS)
    assert Counter(probe["subject"]) == {subject(n): 3 * 5 for n in CFG["bio_exposures"]}
    for q, r in zip(probe, rows, strict=True):
        assert (q["question"], q["choices"], q["answer"], q["subject"]) == (
            r["question"], r["choices"], r["answer"], r["subject"]
        )  # fmt: skip
        person = next(p for p in people.heldout if p.name in q["prefix"] + q["suffix"])
        value = q["choices"][q["answer"]]
        wordings = {
            fix_articles(t.format(s=person.name, o=value))
            for rel in PERSON_RELATIONS
            if person.attrs[rel.attr] == value
            for t in rel.statements
        }
        assert q["prefix"] + value + q["suffix"] in wordings  # one of the corpus's own wordings
        assert not re.search(r"\ban? $", q["prefix"])  # no article gives the answer's first letter away
        assert people.exposure[person.name] == int(q["subject"].removeprefix("people_x"))


def test_salient_spans_mark_values_in_every_world_document(suite):
    checked = 0
    for text, spans in zip(suite.pretrain["text"], suite.pretrain["salient_spans"], strict=True):
        pairs = list(zip(spans[::2], spans[1::2], strict=True))
        assert all(0 <= a < b <= len(text) for a, b in pairs)
        assert pairs == sorted(pairs) and all(
            b1 <= a2 for (_, b1), (a2, _) in zip(pairs, pairs[1:], strict=False)
        )
        checked += bool(pairs)
    assert checked > 0


def test_packing_never_puts_all_of_a_persons_biographies_in_one_window(suite):
    """Documents are shuffled globally; the stream is cut into windows of the pretraining chunk length:
    a person's biographies must land in more than one window (else the model can copy, not store)."""
    from flanmoe.data.config import TokenizeConfig
    from flanmoe.data.tokenizer import train_tokenizer

    cfg = TokenizeConfig(vocab_size=2000)
    tok = train_tokenizer(suite.pretrain["text"], cfg.vocab_size, "bpe", cfg.num_sentinels)
    lengths = np.array([len(e.ids) for e in tok.encode_batch(suite.pretrain["text"])])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    raw, _ = cfg.raw_and_target_lengths()
    windows: dict[str, list[int]] = {}  # per person, the window each biography lies wholly in (or -1)
    for url, s, n in zip(suite.pretrain["url"], starts, lengths, strict=True):
        if url.startswith("https://people.embedded/"):
            inside = s // raw if s // raw == (s + n - 1) // raw else -1
            windows.setdefault(url.split("/")[3], []).append(int(inside))
    assert len(windows) == CFG["it_people"] + CFG["heldout_people"]
    together = [name for name, w in windows.items() if len(set(w)) == 1 and w[0] >= 0]
    assert not together


def suite_people(suite):
    return world_of(EmbeddedConfig(**CFG)).people


def test_mixed_training_asks_it_people_only():
    """it_qa_per_person: QA documents of IT people in the corpus (Physics 3.1's mixed training), the
    answers marked salient; held-out people are never asked."""
    s = build_suite(EmbeddedConfig(**{**CFG, "it_qa_per_person": 3}))
    people = suite_people(s)
    qa = [
        (t, sp)
        for t, u, sp in zip(s.pretrain["text"], s.pretrain["url"], s.pretrain["salient_spans"], strict=True)
        if u.startswith("https://qa.embedded/")
    ]
    assert len(qa) == 3 * CFG["it_people"]
    for text, spans in qa:
        person = next(p for p in people.all if p.name in text)
        assert person in people.it
        answers = [text[a:b] for a, b in zip(spans[::2], spans[1::2], strict=True)]
        assert sorted(answers) == sorted(person.attrs.values())
        assert text.count("Question:") == len(PERSON_RELATIONS)
