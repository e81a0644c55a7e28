"""The tokenize stage's library on tiny prepared fixtures: layout, packing, truncation, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from pydantic import ValidationError

from flanmoe.data.span_corruption import span_uncorrupt
from flanmoe.data.tokenize import NO_PROBE, TokenizeConfig, get_tokenizer, tokenize_pairs, tokenize_prepared
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


def test_without_a_probe_the_probe_dir_says_so(prepared_dir: Path, tmp_path: Path) -> None:
    """Real corpora have no probe: data/tokenized/probe still exists (a DVC dependency of the
    evaluations), holding only a note and no dataset."""
    import shutil

    bare = tmp_path / "prepared"
    shutil.copytree(prepared_dir, bare)
    shutil.rmtree(bare / "probe")
    out = tmp_path / "tokenized"
    stats = tokenize_prepared(bare, out, _cfg())
    assert "probe" not in stats
    assert [p.name for p in (out / "probe").iterdir()] == [NO_PROBE]


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


# ---------------------------------------------------------------- salient-span masking

VALUES = ["violin", "Toluma", "harp", "Brekkenfjord"]


def _salient_docs(n: int) -> tuple[list[str], list[list[int]]]:
    """Documents of filler words with facts whose values (``VALUES``) are the salient spans."""
    rng = np.random.default_rng(7)
    texts, spans = [], []
    for _ in range(n):
        text, offsets = "", []
        for _ in range(int(rng.integers(1, 4))):
            text += " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))) + " plays the "
            value = str(rng.choice(VALUES))
            offsets += [len(text), len(text) + len(value)]
            text += value + ". "
        texts.append(text.strip())
        spans.append(offsets)
    return texts, spans


@pytest.fixture(scope="module")
def salient_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("salient")
    texts, spans = _salient_docs(300)
    features = datasets.Features(
        {"text": datasets.Value("string"), "salient_spans": datasets.Sequence(datasets.Value("int32"))}
    )
    datasets.Dataset.from_dict({"text": texts, "salient_spans": spans}, features=features).save_to_disk(
        str(root / "pretrain")
    )
    return root


def _salient_run(root: Path, out: Path, fraction: float, tokenizer: str | None = None, **kw) -> dict:
    cfg = _cfg(target_length=16, salient_fraction=fraction, tokenizer_path=tokenizer, **kw)
    return tokenize_prepared(root, out, cfg)


@pytest.fixture(scope="module")
def salient_runs(salient_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Outputs at salient_fraction 1.0, 0.5 and 0.0 with one tokenizer: {fraction: (rows, stats)}."""
    base = tmp_path_factory.mktemp("salient-out")
    runs = {1.0: _salient_run(salient_prepared, base / "f1", 1.0)}
    tok = str(base / "f1" / "tokenizer.json")
    runs[0.5] = _salient_run(salient_prepared, base / "f05", 0.5, tok)
    runs[0.0] = _salient_run(salient_prepared, base / "f0", 0.0, tok)
    names = {1.0: "f1", 0.5: "f05", 0.0: "f0"}
    return {
        f: (datasets.load_from_disk(str(base / names[f] / "pretrain")).with_format("numpy")[:], s["pretrain"])
        for f, s in runs.items()
    } | {"tokenizer": tok}


def _spans_of(labels: np.ndarray) -> list[list[int]]:
    """The noise spans of a targets row: the tokens after each sentinel (ids 3..22); a last empty one
    is the sentinel of a trailing non-noise run."""
    spans: list[list[int]] = []
    for t in labels[labels != 0][:-1]:
        if 3 <= t < 23:
            spans.append([])
        else:
            spans[-1].append(int(t))
    return spans[:-1] if spans and not spans[-1] else spans


def test_salient_rows_mask_exactly_the_values(salient_prepared: Path, salient_runs: dict) -> None:
    rows, stats = salient_runs[1.0]
    tok = load_tokenizer(salient_runs["tokenizer"], 20)
    stream, salient = [], []  # the packed stream (eos after each doc) and which tokens overlap a value
    for text, spans in zip(*_salient_docs(300), strict=True):
        enc = tok.encode(text)
        stream += enc.ids
        pairs = list(zip(spans[::2], spans[1::2], strict=True))
        salient += [any(s < b and a < e for s, e in pairs) for a, b in enc.offsets]
    raw = stats["raw_chunk_length"]
    assert set(stats) >= {"salient_rows", "salient_tokens", "salient_tail_dropped_tokens"}
    assert stats["salient_rows"] > 0.9  # nearly every chunk holds a value past its first token
    n_salient, masked, dropped = 0, 0, 0
    for i, (x, y) in enumerate(zip(rows["input_ids"], rows["labels"], strict=True)):
        assert x[x != 0][-1] == EOS_ID and y[y != 0][-1] == EOS_ID and y[0] == 3  # <extra_id_0> first
        chunk = span_uncorrupt(x, y, range(3, 23))
        assert chunk == stream[i * raw : i * raw + len(chunk)]  # the chunk, possibly tail-trimmed
        flags = salient[i * raw : i * raw + len(chunk)]
        runs, start = [], None  # maximal runs of salient tokens in the kept chunk, none at position 0
        for k, f in enumerate([*flags, False]):
            if f and start is None:
                start = k
            elif not f and start is not None:
                runs += [chunk[start:k]] if start > 0 else []
                start = None
        spans = _spans_of(y)
        if runs and spans == runs[: len(spans)]:  # a salient row: its spans are the values, in order
            n_salient += 1
            masked += sum(map(len, spans))
            dropped += raw - len(chunk)
            if len(spans) < len(runs):  # the next value would not fit the 16-token targets
                assert sum(map(len, runs[: len(spans) + 1])) + len(spans) + 3 > 16
            assert all(tok.decode(s).strip() in VALUES for s in spans[:-1])
        else:
            assert len(chunk) == raw  # a random-span row keeps the whole chunk
    assert n_salient == round(stats["salient_rows"] * stats["examples"]) > 0.9 * len(rows["labels"])
    assert masked == stats["salient_tokens"] and dropped == stats["salient_tail_dropped_tokens"] > 0


def test_salient_fraction_half_mixes_the_two_objectives(salient_runs: dict) -> None:
    all_rows, half, none = salient_runs[1.0][0], salient_runs[0.5][0], salient_runs[0.0][0]
    same_as_all = (half["labels"] == all_rows["labels"]).all(axis=1)
    same_as_none = (half["labels"] == none["labels"]).all(axis=1)
    eligible = ~(all_rows["labels"] == none["labels"]).all(axis=1)  # rows salient at 1.0
    # a row is either salient (as at 1.0) or T5's random spans (as at 0.0), nothing else
    assert (same_as_all | same_as_none).all() and (
        half["input_ids"] == np.where(same_as_all[:, None], all_rows["input_ids"], none["input_ids"])
    ).all()
    share = (same_as_all & eligible).sum() / eligible.sum()
    assert eligible.sum() > 150 and 0.4 < share < 0.6
    assert salient_runs[0.5][1]["salient_rows"] == pytest.approx((same_as_all & eligible).mean())


def test_salient_fraction_zero_is_t5_as_before(salient_runs: dict) -> None:
    """At 0.0 the salient_spans column is ignored: the rows are the random-span recipe, seeded per block."""
    from flanmoe.data.span_corruption import random_spans_noise_mask, span_corrupt_batch
    from flanmoe.data.tokenize import BLOCK

    rows, stats = salient_runs[0.0]
    assert "salient_rows" not in stats
    tok = load_tokenizer(salient_runs["tokenizer"], 20)
    stream = np.array([t for e in tok.encode_batch(_salient_docs(300)[0]) for t in e.ids])
    raw, n = stats["raw_chunk_length"], stats["examples"]
    chunks = stream[: n * raw].reshape(n, raw)
    for block in range(-(-n // BLOCK)):
        part = chunks[block * BLOCK : (block + 1) * BLOCK]
        rng = np.random.default_rng([1234, block])
        mask = random_spans_noise_mask(raw, 0.15, rng, 3.0, batch=len(part))
        x, y = span_corrupt_batch(part, mask, range(3, 23), EOS_ID)
        assert (rows["input_ids"][block * BLOCK : (block + 1) * BLOCK, : x.shape[1]] == x).all()
        assert (rows["labels"][block * BLOCK : (block + 1) * BLOCK, : y.shape[1]] == y).all()


def test_salient_independent_of_num_proc_and_batch_size(
    salient_prepared: Path, salient_runs: dict, tmp_path: Path
) -> None:
    _salient_run(salient_prepared, tmp_path / "b", 0.5, salient_runs["tokenizer"], num_proc=2, batch_size=7)
    b = datasets.load_from_disk(str(tmp_path / "b" / "pretrain")).with_format("numpy")[:]
    assert (b["input_ids"] == salient_runs[0.5][0]["input_ids"]).all()
    assert (b["labels"] == salient_runs[0.5][0]["labels"]).all()


def test_salient_fraction_needs_salient_spans(prepared_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tokenize\.salient_fraction: 0\.5 .* no `salient_spans` column"):
        tokenize_prepared(prepared_dir, tmp_path / "out", _cfg(salient_fraction=0.5))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    with pytest.raises(ValidationError, match="salient_fraction"):
        _cfg(salient_fraction=1.5)


@pytest.mark.parametrize("fraction", [1.0, 0.0])
def test_document_packing_puts_one_document_in_a_chunk(
    salient_prepared: Path, salient_runs: dict, tmp_path: Path, fraction: float
) -> None:
    """packing: document: chunk k of a document is its tokens [k raw, (k + 1) raw), never another
    document's; the padding of its last chunk reaches neither inputs nor targets."""
    stats = _salient_run(
        salient_prepared, tmp_path / "doc", fraction, salient_runs["tokenizer"], packing="document"
    )["pretrain"]
    rows = datasets.load_from_disk(str(tmp_path / "doc" / "pretrain")).with_format("numpy")[:]
    tok = load_tokenizer(salient_runs["tokenizer"], 20)
    raw = stats["raw_chunk_length"]
    expected = [
        ids[k : k + raw]
        for ids in (e.ids for e in tok.encode_batch(_salient_docs(300)[0]))
        for k in range(0, len(ids), raw)
    ]
    assert stats["packing"] == "document" and stats["examples"] == len(expected) > 300
    assert stats["dropped_tokens"] == 0 and stats["tokens"] == sum(map(len, expected))
    trimmed = 0
    for x, y, want in zip(rows["input_ids"], rows["labels"], expected, strict=True):
        for seq in (x, y):  # padding only at the end
            assert (seq[: np.count_nonzero(seq)] != 0).all()
        chunk = span_uncorrupt(x, y, range(3, 23))
        assert chunk == want[: len(chunk)]  # a salient row may cut its tail to fit the inputs
        trimmed += len(want) - len(chunk)
        if fraction == 0.0:
            assert chunk == want
    if fraction == 1.0:
        assert 0.9 < stats["salient_rows"] and trimmed == stats["salient_tail_dropped_tokens"]
    # stream packing (the default) of the same corpus fills chunks across documents: fewer of them
    assert salient_runs[fraction][1]["examples"] < 0.8 * stats["examples"]


def test_packing_must_be_stream_or_document() -> None:
    with pytest.raises(ValidationError, match="packing"):
        _cfg(packing="documents")


@pytest.mark.parametrize("row_length", [None, 16, 7])
def test_write_stream_chunk_by_chunk_matches_the_documents(tmp_path: Path, row_length: int | None) -> None:
    from flanmoe.data.packing import write_stream

    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 100, rng.integers(0, 40)).astype(np.int32) for _ in range(500)]
    ds = datasets.Dataset.from_dict({"ids": docs}).map(lambda b: b, batched=True, batch_size=37)
    assert ds.data.table.column("ids").num_chunks > 10
    length = write_stream(ds, "ids", np.int32, tmp_path / "s.npy", row_length)
    # the reference: each document end to end, or from a multiple of row_length on (gaps 0)
    want = []
    for d in docs:
        want += d.tolist() + [0] * ((-len(d) % row_length) if row_length else 0)
    got = np.load(tmp_path / "s.npy")
    assert length == len(want) and got.dtype == np.int32 and got.tolist() == want


def test_sentinel_answer_form_puts_every_pair_in_the_slot(
    tokenized: tuple[Path, dict], tmp_path: Path
) -> None:
    tok = load_tokenizer(tokenized[0] / "tokenizer.json", 20)
    s0, s1 = tok.token_to_id("<extra_id_0>"), tok.token_to_id("<extra_id_1>")
    pairs = datasets.Dataset.from_dict(
        {"inputs": ["x y z", "y " * 40], "targets": ["z", "x " * 10], "task_name": ["ft"] * 2}
    )
    plain, _ = tokenize_pairs(
        pairs, tok, _cfg(max_input_length=24, max_target_length=6), tmp_path / "p.arrow", True
    )
    cfg = _cfg(max_input_length=24, max_target_length=6, answer_form="sentinel")
    slot, stats = tokenize_pairs(pairs, tok, cfg, tmp_path / "s.arrow", True)
    # short pair: the plain ids with the slot opened before eos, the answer as the span after it
    assert slot[0]["input_ids"] == plain[0]["input_ids"][:-1] + [s0, EOS_ID]
    assert slot[0]["labels"] == [s0, *tok.encode(" z", add_special_tokens=False).ids, s1, EOS_ID]
    # long pair: cut to the limits with the slot kept (never cut away)
    assert len(slot[1]["input_ids"]) == 24 and slot[1]["input_ids"][-2:] == [s0, EOS_ID]
    assert (
        len(slot[1]["labels"]) == 6 and slot[1]["labels"][0] == s0 and slot[1]["labels"][-2:] == [s1, EOS_ID]
    )
    assert stats["input_truncation_rate"] == 0.5 and stats["target_truncation_rate"] == 0.5


def test_sentinel_answer_form_needs_two_sentinels() -> None:
    with pytest.raises(ValidationError, match="answer_form: 'sentinel' needs num_sentinels >= 2"):
        _cfg(num_sentinels=1, answer_form="sentinel")
    with pytest.raises(ValidationError, match="answer_form"):
        _cfg(answer_form="span")
