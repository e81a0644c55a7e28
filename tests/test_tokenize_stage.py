"""Stage `tokenize` as DVC runs it: clear exit-2 errors for bad input, before anything is written."""

import json

import pytest

from tests.stage_helpers import run_stage, write_params


def test_without_prepared_data(tmp_path):
    write_params(tmp_path)
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert "data/prepared/pretrain not found: run the prepare stage first" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _fake_prepared(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["hello world"] * 4}).save_to_disk(
        str(tmp_path / "data" / "prepared" / "pretrain")
    )


def test_missing_tokenizer_file_names_the_key(tmp_path):
    _fake_prepared(tmp_path)
    write_params(
        tmp_path,
        tokenize={"tokenizer_path": str(tmp_path / "nope" / "tokenizer.json"), "salient_fraction": 0.0},
    )
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert f"tokenize.tokenizer_path ({tmp_path / 'nope' / 'tokenizer.json'})" in proc.stderr
    assert not (tmp_path / "data" / "tokenized").exists() and not (tmp_path / "metrics").exists()


def test_tokenizer_without_our_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models

    _fake_prepared(tmp_path)
    foreign = tmp_path / "foreign.json"
    Tokenizer(models.WordLevel({"[PAD]": 0, "hello": 1, "[UNK]": 2}, unk_token="[UNK]")).save(str(foreign))
    write_params(tmp_path, tokenize={"tokenizer_path": str(foreign), "salient_fraction": 0.0})
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert "tokenize.tokenizer_path" in proc.stderr and "<pad>" in proc.stderr
    assert not (tmp_path / "data" / "tokenized").exists()
    assert json.loads(foreign.read_text())["model"]["type"] == "WordLevel"  # input left untouched


@pytest.mark.slow
def test_hf_t5_tokenizer_directory_with_sentinels_at_the_top(tmp_path):
    """A tokenizer laid out as HF T5's (``<extra_id_0>`` the last id), given as its directory: the
    stage runs and span corruption uses ``<extra_id_k>`` at the tokenizer's ids, descending."""
    import datasets
    from tokenizers import Tokenizer

    from flanmoe.data.span_corruption import span_uncorrupt
    from flanmoe.data.tokenizer import sentinel_ids
    from tests.hf_fixtures import t5_style_tokenizer
    from tests.stage_helpers import TINY_EMBEDDED

    micro = {
        "num_sentinels": 20,
        "input_length": 64,
        "target_length": 16,
        "salient_fraction": 0.0,
        "packing": "stream",  # chunks are raw-length slices of the stream
    }
    write_params(tmp_path, prepare={"embedded": TINY_EMBEDDED}, tokenize=micro)
    run_stage("prepare", tmp_path)
    texts = datasets.load_from_disk(str(tmp_path / "data" / "prepared" / "pretrain"))["text"]
    tok = t5_style_tokenizer(texts, vocab_size=500)
    hf_dir = tmp_path / "t5-tokenizer"
    hf_dir.mkdir()
    tok.save(str(hf_dir / "tokenizer.json"))
    write_params(
        tmp_path, prepare={"embedded": TINY_EMBEDDED}, tokenize={**micro, "tokenizer_path": str(hf_dir)}
    )
    proc = run_stage("tokenize", tmp_path)

    top = tok.get_vocab_size() - 1
    assert tok.token_to_id("<extra_id_0>") == top
    out = tmp_path / "data" / "tokenized"
    pre = datasets.load_from_disk(str(out / "pretrain")).with_format("numpy")[:]
    sentinels = sentinel_ids(tok)
    metrics = json.loads((tmp_path / "metrics" / "tokenize.json").read_text())
    raw = metrics["pretrain"]["raw_chunk_length"]
    for x, y in zip(pre["input_ids"][:20], pre["labels"][:20], strict=True):
        in_sent, tg_sent = [t for t in x if t > top - 100], [t for t in y if t > top - 100]
        assert in_sent == tg_sent == list(range(top, top - len(tg_sent), -1)) and tg_sent
        assert y[0] == top  # targets open with <extra_id_0>
        assert len(span_uncorrupt(x, y, sentinels)) == raw  # the raw chunk, back in place
    assert metrics["tokenizer"]["source"] == str(hf_dir) and metrics["tokenizer"]["vocab_size"] == top + 1
    assert Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("<extra_id_0>") == top
    assert "flan" in metrics and "finetune" in metrics
    # throughput: printed and in the MLflow run, never in the DVC metrics file (no timings there)
    from flanmoe import tracking
    from flanmoe.config import flatten
    from stages.tokenize import total_tokens

    assert "MB/s" in proc.stdout and "tokens/s" in proc.stdout
    assert not any(k.endswith("per_s") for k in flatten(metrics))
    (run,) = tracking.search_runs(
        "flan-moe", "tags.stage = 'tokenize'", uri=f"sqlite:///{tmp_path / 'mlruns.db'}"
    )
    tokens = total_tokens(metrics)
    assert tokens > metrics["pretrain"]["tokens"] + metrics["flan"]["tokens"]  # the fine-tuning sets count
    assert run["metrics"]["tokens_per_s"] == pytest.approx(tokens / run["metrics"]["seconds"])
    assert run["metrics"]["mb_per_s"] > 0


def test_salient_fraction_without_salient_spans_names_the_key(tmp_path):
    _fake_prepared(tmp_path)  # a real corpus's shape: `text` only
    write_params(tmp_path, tokenize={"salient_fraction": 0.5})
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert "tokenize.salient_fraction: 0.5" in proc.stderr and "data/prepared/pretrain" in proc.stderr
    assert "salient_spans" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "tokenized").exists() and not (tmp_path / "metrics").exists()
