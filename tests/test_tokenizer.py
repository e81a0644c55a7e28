"""Tokenizer: special ids, sentinels, eos post-processor, round trip, validation on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from flanmoe.data.tokenizer import (
    EOS_ID,
    PAD_ID,
    UNK_ID,
    load_tokenizer,
    sentinel_ids,
    train_tokenizer,
)

CORPUS = [
    "The river flows north past the old stone city.\nIts king, Aldo, rules 7 towns.",
    "Queens and kings move; the red tower stands at 42 Main St.   Tabs\tand spaces.",
    "Numbers like 3.14 and 2,718 appear; so do symbols: (a+b)*c = d!",
] * 30


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=400, kind="bpe", num_sentinels=10)


def test_special_ids_and_sentinels(bpe: Tokenizer) -> None:
    assert [bpe.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [PAD_ID, EOS_ID, UNK_ID] == [0, 1, 2]
    assert sentinel_ids(bpe) == list(range(3, 13))
    assert bpe.id_to_token(3) == "<extra_id_0>" and bpe.id_to_token(12) == "<extra_id_9>"


def test_bpe_round_trip_is_exact_and_ends_with_eos(bpe: Tokenizer) -> None:
    for text in CORPUS[:3] + ["unseen: café ☃ 東京  double  spaces\n\nend", ""]:
        ids = bpe.encode(text).ids
        assert ids[-1] == EOS_ID and EOS_ID not in ids[:-1]
        assert bpe.decode(ids) == text
        assert bpe.encode(text, add_special_tokens=False).ids == ids[:-1]


def test_unigram_round_trip_on_seen_characters() -> None:
    tok = train_tokenizer(CORPUS, vocab_size=200, kind="unigram", num_sentinels=5)
    assert sentinel_ids(tok) == [3, 4, 5, 6, 7] and tok.token_to_id("<unk>") == UNK_ID
    for text in CORPUS[:3]:
        ids = tok.encode(text).ids
        assert ids[-1] == EOS_ID and UNK_ID not in ids
        assert tok.decode(ids) == text


def test_deterministic_training() -> None:
    a = train_tokenizer(CORPUS, vocab_size=350, kind="bpe", num_sentinels=4).to_str()
    b = train_tokenizer(iter(CORPUS), vocab_size=350, kind="bpe", num_sentinels=4).to_str()
    assert a == b


def test_save_load_and_validation(bpe: Tokenizer, tmp_path: Path) -> None:
    bpe.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path, num_sentinels=10)  # a directory holding tokenizer.json
    assert loaded.encode("the river").ids == bpe.encode("the river").ids
    with pytest.raises(ValueError, match=r"<extra_id_10>.*missing"):
        load_tokenizer(tmp_path / "tokenizer.json", num_sentinels=11)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_tokenizer(tmp_path / "nope.json")
    # a tokenizer with the specials at other ids is refused, naming the file and the token
    bad = Tokenizer(
        models.WordLevel({"<unk>": 0, "<pad>": 1, "</s>": 2, "<extra_id_0>": 3}, unk_token="<unk>")
    )
    bad.save(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match=r"bad\.json.*'<pad>' has id 1, expected 0"):
        load_tokenizer(tmp_path / "bad.json")


def test_load_adds_missing_eos_post_processor(bpe: Tokenizer, tmp_path: Path) -> None:
    spec = json.loads(bpe.to_str())
    spec["post_processor"] = None
    (tmp_path / "t.json").write_text(json.dumps(spec))
    assert load_tokenizer(tmp_path / "t.json").encode("king").ids[-1] == EOS_ID


def test_sentinels_at_the_top_as_hf_t5(tmp_path: Path) -> None:
    from tests.hf_fixtures import t5_style_tokenizer

    tok = t5_style_tokenizer(CORPUS, vocab_size=200, num_sentinels=100)
    top = tok.get_vocab_size() - 1
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path, num_sentinels=100)  # accepted: sentinels are looked up by text
    assert sentinel_ids(loaded) == list(range(top, top - 100, -1))  # <extra_id_0> is the last id
    assert [loaded.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    assert loaded.encode("the river").ids[-1] == EOS_ID
    with pytest.raises(ValueError, match=r"<extra_id_100>.*missing"):
        load_tokenizer(tmp_path, num_sentinels=101)
