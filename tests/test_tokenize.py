"""The tokenize stage's library on tiny prepared fixtures: layout, packing, truncation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from pydantic import ValidationError

from flanmoe.data.span_corruption import span_uncorrupt
from flanmoe.data.tokenize import TokenizeConfig, get_tokenizer, tokenize_pairs, tokenize_prepared
from flanmoe.data.tokenizer import EOS_ID, load_tokenizer

WORDS = "the a river stone city king queen moves north south east west of in on under over seven red".split()


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 80)))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    docs = _docs(400)
    datasets.Dataset.from_dict(
        {"text": docs, "timestamp": ["2019-01-01"] * len(docs), "url": [f"u{i}" for i in range(len(docs))]}
    ).save_to_disk(str(root / "pretrain"))
    inputs = [f"Question: {d} Answer:" for d in _docs(60, 1)]
    datasets.Dataset.from_dict(
        {
            "inputs": inputs,
            "targets": [d.split()[0] for d in _docs(60, 2)],
            "task_source": ["fixture"] * 60,
            "task_name": [f"t{i % 3}" for i in range(60)],
            "template_type": ["zs_opt", "fs_opt"] * 30,
        }
    ).save_to_disk(str(root / "flan"))
    mmlu = datasets.Dataset.from_dict(
        {"question": ["q1", "q2"], "subject": ["s", "s"], "choices": [list("abcd")] * 2, "answer": [0, 3]}
    )
    datasets.DatasetDict({"dev": mmlu, "test": mmlu}).save_to_disk(str(root / "mmlu"))
    bbh = datasets.Dataset.from_dict({"input": ["not ( True )"], "target": ["False"]})
    datasets.DatasetDict({"boolean_expressions": bbh}).save_to_disk(str(root / "bbh"))
    probe = datasets.Dataset.from_dict(
        {
            "subject": ["people_x8"],
            "prefix": ["Alice plays the "],
            "suffix": ["."],
            "question": ["Which instrument does Alice play?"],
            "choices": [["violin", "flute", "harp", "drum"]],
            "answer": [0],
        }
    )
    datasets.DatasetDict({"test": probe}).save_to_disk(str(root / "probe"))
    pair = datasets.Dataset.from_dict(
        {"inputs": ["x y z", "y"], "targets": ["z", "x"], "task_name": ["ft"] * 2}
    )
    datasets.DatasetDict({"train": pair, "validation": pair, "test": pair}).save_to_disk(
        str(root / "finetune" / "ft")
    )
    return root


def _cfg(**kw) -> TokenizeConfig:
    base = dict(vocab_size=400, num_sentinels=20, input_length=32, target_length=8, batch_size=50)
    base.update(kw)
    return TokenizeConfig(**base)


@pytest.fixture(scope="module")
def tokenized(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tok") / "tokenized"
    cfg = _cfg(max_input_length=24, max_target_length=4)
    return out, tokenize_prepared(prepared_dir, out, cfg)


def test_layout_and_columns(prepared_dir: Path, tokenized: tuple[Path, dict]) -> None:
    out, stats = tokenized
    assert (out / "tokenizer.json").is_file()
    assert not list(out.parent.glob(".tokenized.tmp-*"))  # temp dir renamed away
    pre = datasets.load_from_disk(str(out / "pretrain"))
    assert pre.column_names == ["input_ids", "labels"]
    arr = pre.with_format("numpy")[:]
    assert arr["input_ids"].shape == (len(pre), 32) and arr["labels"].shape == (len(pre), 8)
    flan = datasets.load_from_disk(str(out / "flan"))
    assert set(flan.column_names) == {"input_ids", "labels", "task_source", "task_name", "template_type"}
    assert all(ids[-1] == EOS_ID and len(ids) <= 24 for ids in flan["input_ids"])
    assert all(ids[-1] == EOS_ID and len(ids) <= 4 for ids in flan["labels"])
    ft = datasets.load_from_disk(str(out / "finetune" / "ft"))
    assert sorted(ft) == ["test", "train", "validation"]
    assert {"inputs", "targets", "task_name", "input_ids", "labels"} <= set(ft["train"].column_names)
    mmlu = datasets.load_from_disk(str(out / "mmlu"))
    assert mmlu["test"]["choices"][0] == list("abcd") and mmlu["test"]["answer"] == [0, 3]
    assert datasets.load_from_disk(str(out / "bbh"))["boolean_expressions"]["target"] == ["False"]
    json.dumps(stats)  # the stage writes it as metrics JSON
    assert stats["mmlu"] == {"dev": {"examples": 2}, "test": {"examples": 2}}
    probe = datasets.load_from_disk(str(out / "probe"))  # the knowledge probe: copied as is
    assert probe["test"].to_list() == datasets.load_from_disk(str(prepared_dir / "probe"))["test"].to_list()
    assert stats["probe"] == {"test": {"examples": 1}}
    assert 3 + 20 + 256 < stats["tokenizer"]["vocab_size"] <= 400  # a tiny corpus runs out of merges


def test_pretrain_packing_and_reconstruction(tokenized: tuple[Path, dict]) -> None:
    out, stats = tokenized
    s = stats["pretrain"]
    assert s["packing_efficiency"] >= 0.95
    assert s["examples"] * s["raw_chunk_length"] + s["dropped_tokens"] == s["tokens"]
    pre = datasets.load_from_disk(str(out / "pretrain")).with_format("numpy")[:]
    tok = load_tokenizer(out / "tokenizer.json", 20)
    # un-corrupting every chunk and concatenating gives back the document stream
    pairs = zip(pre["input_ids"], pre["labels"], strict=True)
    stream = [t for x, y in pairs for t in span_uncorrupt(x, y, range(3, 23))]
    text = tok.decode(stream, skip_special_tokens=False)
    full = "</s>".join(_docs(400)) + "</s>"
    assert len(text) > 0.99 * len(full) and full.startswith(text)  # all but the dropped tail


def test_flan_truncation_stats(tokenized: tuple[Path, dict]) -> None:
    s = tokenized[1]["flan"]
    assert s["examples"] == 60
    assert s["input_truncation_rate"] > 0.5  # 24-token inputs cut most fixture questions
    assert 0.0 <= s["target_truncation_rate"] <= 1.0 and s["truncated_tokens"] > 0
    assert s["tokens"] == s["input_tokens"] + s["target_tokens"]


def test_deterministic_across_num_proc_and_batch_size(prepared_dir: Path, tokenized, tmp_path: Path) -> None:
    out1 = tokenized[0]
    tok_path = str(out1 / "tokenizer.json")
    cfg = _cfg(max_input_length=24, max_target_length=4, num_proc=2, batch_size=20, tokenizer_path=tok_path)
    tokenize_prepared(prepared_dir, tmp_path / "b", cfg)
    for role in ("pretrain", "flan"):
        a = datasets.load_from_disk(str(out1 / role)).to_dict()
        b = datasets.load_from_disk(str(tmp_path / "b" / role)).to_dict()
        assert a == b, role
    # the same params again (tokenizer retrained): every file byte-identical, so DVC's hash is stable
    tokenize_prepared(prepared_dir, tmp_path / "c", _cfg(max_input_length=24, max_target_length=4))
    files = sorted(p.relative_to(out1) for p in out1.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*") if p.is_file())
    for f in files:
        assert (out1 / f).read_bytes() == (tmp_path / "c" / f).read_bytes(), f


def test_config_cross_field_checks() -> None:
    with pytest.raises(ValidationError, match="target_length"):
        TokenizeConfig(input_length=256, target_length=32)
    with pytest.raises(ValidationError, match="vocab_size"):
        TokenizeConfig(vocab_size=300)
    assert TokenizeConfig(input_length=256, target_length=64).raw_and_target_lengths() == (284, 58)


def test_missing_pretrain_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pretrain"):
        tokenize_prepared(tmp_path / "nope", tmp_path / "out", _cfg())
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_empty_pairs_split(tokenized: tuple[Path, dict], tmp_path: Path) -> None:
    tok = load_tokenizer(tokenized[0] / "tokenizer.json", 20)
    empty = datasets.Dataset.from_dict({"inputs": [], "targets": [], "task_name": []})
    out, stats = tokenize_pairs(empty, tok, _cfg(), tmp_path / "e.arrow", keep_text=True)
    assert len(out) == 0 and {"input_ids", "labels", "inputs"} <= set(out.column_names)
    assert stats["examples"] == 0 and stats["truncation_rate"] == 0.0


def test_tokenizer_train_budget(prepared_dir: Path) -> None:
    _, stats = get_tokenizer(prepared_dir, _cfg(tokenizer_train_mb=0.01))
    assert 10_000 <= stats["train_chars"] < 10_000 + max(map(len, _docs(400)))
    assert stats["source"] == "trained" and stats["vocab_size"] <= 400
