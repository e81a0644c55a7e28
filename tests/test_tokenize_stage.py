"""Stage `tokenize` as DVC runs it: clear exit-2 errors for bad input, before anything is written."""

import json

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
    write_params(tmp_path, tokenize={"tokenizer_path": str(tmp_path / "nope" / "tokenizer.json")})
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert f"tokenize.tokenizer_path ({tmp_path / 'nope' / 'tokenizer.json'})" in proc.stderr
    assert not (tmp_path / "data" / "tokenized").exists() and not (tmp_path / "metrics").exists()


def test_tokenizer_without_our_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models

    _fake_prepared(tmp_path)
    foreign = tmp_path / "foreign.json"
    Tokenizer(models.WordLevel({"[PAD]": 0, "hello": 1, "[UNK]": 2}, unk_token="[UNK]")).save(str(foreign))
    write_params(tmp_path, tokenize={"tokenizer_path": str(foreign)})
    proc = run_stage("tokenize", tmp_path, check=False)
    assert proc.returncode == 2
    assert "tokenize.tokenizer_path" in proc.stderr and "<pad>" in proc.stderr
    assert not (tmp_path / "data" / "tokenized").exists()
    assert json.loads(foreign.read_text())["model"]["type"] == "WordLevel"  # input left untouched
