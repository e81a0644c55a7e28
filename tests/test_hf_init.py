"""``archs.variants.<arch>.init: hf:<dir or hub id>``: params validation, the pretrain stage's exit-2
errors before anything is written (missing checkpoint, hub id offline, wrong kind, tokenizer that does
not fit), and the whole pipeline from a tiny random Switch checkpoint (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from flanmoe.config import ParamsError, parse_params
from tests.stage_helpers import REPO, TINY_EMBEDDED, run_stage, write_params

CORPUS = ["The river flows north past the old stone city. Its king, Aldo, rules 7 towns."] * 40


def _params(**variants) -> dict:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["archs"]["variants"].update(variants)
    return data


def _error(data: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(data, "params.yaml")
    assert len(info.value.lines) == 1, info.value.lines
    return info.value.lines[0]


def test_init_params():
    ok = _params(switch={"moe": {"router": "switch"}, "init": "hf:google/switch-base-8"})
    ok["tokenize"]["tokenizer_path"] = "t5-tokenizer/"
    params = parse_params(ok)
    assert params.archs.variants["switch"].hf_init == "google/switch-base-8"
    assert params.archs.variants["dense"].init == "scratch" and params.archs.variants["dense"].hf_init is None
    bad = _params(switch={"moe": {"router": "switch"}, "init": "google/switch-base-8"})
    assert _error(bad).startswith("archs.variants.switch.init: expected 'scratch' or 'hf:")
    assert _error(_params(switch={"init": "hf:"})).startswith("archs.variants.switch.init:")
    no_tok = _params(switch={"moe": {"router": "switch"}, "init": "hf:ckpt/"})
    assert _error(no_tok).startswith("tokenize.tokenizer_path: arch 'switch' starts from hf:ckpt/")
    ok["pretrain"]["steps"] = 0
    assert _error(ok).startswith("pretrain.steps: 0 (import and export only) needs an hf: init")
    ok["archs"]["run"] = ["switch"]
    assert parse_params(ok).pretrain.steps == 0  # every arch that runs is imported: allowed


def _workspace(tmp_path: Path, init: str, arch: dict | None = None, tokenizer: Path | None = None) -> Path:
    """Params with arch ``switch`` (or ``arch``) starting from ``init``, and a fake tokenized dir."""
    from flanmoe.data.tokenizer import train_tokenizer

    tok_file = tokenizer or tmp_path / "ours.json"
    if tokenizer is None:
        train_tokenizer(CORPUS, 300, kind="bpe", num_sentinels=20).save(str(tok_file))
    (tmp_path / "data" / "tokenized" / "pretrain").mkdir(parents=True)
    shutil.copy(tok_file, tmp_path / "data" / "tokenized" / "tokenizer.json")
    variants = {"switch": {"moe": {"router": "switch"}, "init": init}}
    if arch:
        variants.update(arch)
    write_params(
        tmp_path,
        tokenize={
            "tokenizer_path": str(tok_file),
            "num_sentinels": 20,
            "input_length": 64,
            "target_length": 16,
        },
    )
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["archs"]["variants"].update(variants)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _fails(work: Path, arch: str = "switch", **env) -> str:
    proc = run_stage("pretrain", work, check=False, args=(arch,), **env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not (work / "models").exists() and not (work / "metrics").exists()
    assert not (work / "checkpoints").exists()
    return proc.stderr


def test_missing_checkpoint_directory(tmp_path):
    work = _workspace(tmp_path, f"hf:{tmp_path / 'nope'}")
    err = _fails(work)
    assert (
        f"archs.variants.switch.init (hf:{tmp_path / 'nope'}): {tmp_path / 'nope'}: no such directory" in err
    )


def test_hub_id_offline_and_not_cached(tmp_path):
    work = _workspace(tmp_path, "hf:google/switch-base-8")
    err = _fails(work, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    assert "archs.variants.switch.init (hf:google/switch-base-8): google/switch-base-8: not a local" in err
    assert "HF_HUB_OFFLINE=1" in err


@pytest.fixture(scope="module")
def tiny_switch(tmp_path_factory) -> Path:
    """A tiny random HF Switch checkpoint of vocabulary 64, without a tokenizer."""
    pytest.importorskip("transformers")
    from tests.hf_fixtures import tiny_hf_switch

    return tiny_hf_switch(tmp_path_factory.mktemp("hf") / "switch", vocab_size=64)


def test_vocab_mismatch_names_the_key(tmp_path, tiny_switch):
    work = _workspace(tmp_path, f"hf:{tiny_switch}")
    err = _fails(work)
    assert (
        f"archs.variants.switch.init (hf:{tiny_switch}): the checkpoint's vocab_size 64 does not fit" in err
    )
    assert "set tokenize.tokenizer_path to that checkpoint's tokenizer" in err


def test_checkpoint_tokenizer_differs(tmp_path, tiny_switch):
    from tests.hf_fixtures import t5_style_tokenizer

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_switch, ckpt)
    t5_style_tokenizer(CORPUS, vocab_size=200, num_sentinels=20).save(str(ckpt / "tokenizer.json"))
    err = _fails(_workspace(tmp_path, f"hf:{ckpt}"))
    assert f"is not {ckpt / 'tokenizer.json'}; set tokenize.tokenizer_path" in err


def test_dense_arch_from_a_switch_checkpoint(tmp_path, tiny_switch):
    work = _workspace(
        tmp_path, "scratch", arch={"dense": {"dense_twin_of": "switch", "init": f"hf:{tiny_switch}"}}
    )
    err = _fails(work, "dense")
    assert (
        "archs.variants.dense.init" in err and "is a Switch (MoE) checkpoint but arch 'dense' is dense" in err
    )


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["switch", "dense"])
def test_zero_steps_exports_the_import(tmp_path, arch):
    """``pretrain.steps: 0``: the exported model is the checkpoint (Switch for the MoE arch, T5.1.1 for
    the dense one), its config from the checkpoint."""
    pytest.importorskip("transformers")
    import datasets
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from flanmoe.model.hf import load_hf
    from tests.hf_fixtures import t5_style_tokenizer, tiny_hf_switch, tiny_hf_t5
    from tests.test_pretrain_stage import micro_pretrain

    tok = t5_style_tokenizer(CORPUS, vocab_size=200)  # 100 sentinels, as T5TokenizerFast expects
    tok.save(str(tmp_path / "tokenizer.json"))
    n = tok.get_vocab_size()
    make = tiny_hf_switch if arch == "switch" else tiny_hf_t5
    ckpt = make(tmp_path / "ckpt", vocab_size=n + 4, tokenizer_file=tmp_path / "tokenizer.json")
    dense = {"dense": {"dense_twin_of": "switch", "init": f"hf:{ckpt}"}}
    work = _workspace(
        tmp_path / "work",
        f"hf:{ckpt}" if arch == "switch" else "scratch",
        arch=dense if arch == "dense" else None,
        tokenizer=ckpt / "tokenizer.json",
    )
    shutil.rmtree(work / "data" / "tokenized" / "pretrain")
    rng = np.random.default_rng(0)  # packed examples as the tokenize stage writes them
    datasets.Dataset.from_dict(
        {"input_ids": rng.integers(3, n - 20, (32, 64)), "labels": rng.integers(3, n - 20, (32, 16))}
    ).save_to_disk(str(work / "data" / "tokenized" / "pretrain"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["archs"]["run"], params["pretrain"] = [arch], micro_pretrain(steps=0, warmup_steps=0)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stage("pretrain", work, args=(arch,))

    out = work / "models" / "pretrain" / "s1234" / arch
    exported, imported = load_file(str(out / "model.safetensors")), load_hf(ckpt).state_dict()
    assert exported.keys() == imported.keys()
    assert all(torch.equal(exported[k], imported[k]) for k in imported)
    config = json.loads(
        (out / "config.json").read_text()
    )  # the checkpoint's config, not params model / archs
    assert (config["vocab_size"], config["d_model"], config["d_ff"]) == (n + 4, 32, 48)
    if arch == "switch":
        assert (config["moe"]["num_experts"], config["moe"]["expert_capacity"], config["ffn"]) == (
            4,
            64,
            "relu",
        )
    else:
        assert config["moe"] is None and config["ffn"] == "gated_gelu" and not config["tie_embeddings"]
    metrics = json.loads((work / "metrics" / "pretrain" / "s1234" / f"{arch}.json").read_text())
    assert metrics["init"] == f"hf:{ckpt}" and metrics["steps"] == 0 and metrics["train_loss"] is None
    assert metrics["val_loss"] > 0  # the checkpoint's loss on the held-out examples


@pytest.mark.slow
def test_pipeline_from_a_tiny_hf_switch_checkpoint(tmp_path):
    """prepare -> tokenize (the checkpoint's T5-style tokenizer directory) -> pretrain from the
    checkpoint (2 steps) -> instruct -> finetune -> evaluate, on the tiny embedded suite."""
    pytest.importorskip("transformers")
    import datasets

    from tests.hf_fixtures import t5_style_tokenizer, tiny_hf_switch
    from tests.stage_helpers import mlflow_client
    from tests.test_evaluate_stage import MICRO_EVAL
    from tests.test_finetune_stage import micro_finetune
    from tests.test_instruct_stage import micro_instruct
    from tests.test_pretrain_stage import micro_pretrain

    work, ckpt = tmp_path / "work", tmp_path / "switch-tiny"
    work.mkdir()
    write_params(
        work,
        prepare={"embedded": TINY_EMBEDDED},
        tokenize={"num_sentinels": 20, "input_length": 64, "target_length": 16, "tokenizer_path": str(ckpt)},
        archs={
            "run": ["switch"],
            "variants": {"switch": {"moe": {"router": "switch"}, "init": f"hf:{ckpt}"}},
        },
        pretrain=micro_pretrain(steps=2),
        instruct={**micro_instruct(steps=2), "val_examples": 16},
        finetune=micro_finetune(steps=2, scenarios=["after_it"]),
        evaluate={**yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"], **MICRO_EVAL},
    )
    run_stage("prepare", work)
    # the checkpoint: a T5-style tokenizer of the corpus, a Switch model with HF's padded vocabulary
    texts = datasets.load_from_disk(str(work / "data" / "prepared" / "pretrain"))["text"]
    tok = t5_style_tokenizer(texts, vocab_size=500)
    tok.save(str(tmp_path / "tokenizer.json"))
    n = tok.get_vocab_size()
    tiny_hf_switch(ckpt, vocab_size=n + 4, tokenizer_file=tmp_path / "tokenizer.json")
    run_stage("tokenize", work)
    pre = datasets.load_from_disk(str(work / "data" / "tokenized" / "pretrain"))
    assert pre[0]["labels"][0] == n - 1 == tok.token_to_id("<extra_id_0>")  # sentinels from the top

    run_stage("pretrain", work, args=("switch", "--seed", "1234"))
    metrics = json.loads((work / "metrics" / "pretrain" / "s1234" / "switch.json").read_text())
    assert metrics["init"] == f"hf:{ckpt}" and metrics["steps"] == 2 and metrics["train_loss"] > 0
    client = mlflow_client(work)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.stage = 'pretrain'"
    )
    assert [r.data.tags["init"] for r in runs] == [f"hf:{ckpt}"]

    run_stage("instruct", work, args=("switch", "--seed", "1234"))
    run_stage("finetune", work, args=("switch", "fact_verification", "after_it", "--seed", "1234"))
    run_stage(
        "evaluate", work, args=("models/instruct/s1234/switch", "--name", "switch-instruct", "--seed", "1234")
    )
    for stage in ("pretrain", "instruct"):  # the checkpoint's shapes all the way down
        config = json.loads((work / "models" / stage / "s1234" / "switch" / "config.json").read_text())
        assert (config["vocab_size"], config["d_model"], config["moe"]["expert_capacity"]) == (n + 4, 32, 64)
    assert (
        work / "models" / "finetune" / "s1234" / "switch-fact_verification-after_it" / "config.json"
    ).is_file()
    assert json.loads((work / "metrics" / "evaluate" / "s1234" / "switch-instruct.json").read_text())
