"""Params validation: the shipped params.yaml, and one clear dotted-key error per class of mistake."""

import subprocess

import pytest
import yaml

from flanmoe.config import ParamsError, load_params, parse_params


def _shipped(repo_root) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_shipped_params_validate(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.prepare.pretrain.kind == "embedded"
    # every section of the file is a section of the model (and the reverse: no silent defaults)
    assert set(_shipped(repo_root)) == set(type(params).model_fields)


def _error(data) -> list[str]:
    with pytest.raises(ParamsError) as info:
        parse_params(data, "params.yaml")
    return info.value.lines


def _with(repo_root, dotted: str, value) -> dict:
    data = _shipped(repo_root)
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        # unknown key (a typo), at top level, in a section, and deep in a nested model
        ("base.sede", 1, "base.sede: unknown key"),
        ("pretrian", {}, "pretrian: unknown key"),
        ("prepare.mmlu.max_exmaples", 5, "prepare.mmlu.max_exmaples: unknown key"),
        # wrong type
        ("base.seed", "abc", "base.seed: Input should be a valid integer"),
        ("prepare.flan.kind", "s3", "prepare.flan.kind: Input should be 'embedded', 'hub' or 'local'"),
        # out of range
        ("base.seed", -1, "base.seed: Input should be greater than or equal to 0"),
        ("base.seeds", [], "base.seeds: List should have at least 1 item"),
        ("base.seeds", [1, 2, 1], "base.seeds: seeds must be distinct; repeated: [1]"),
        ("base.seeds", [1, -2], "base.seeds.1: Input should be greater than or equal to 0"),
        # extra replicates: new seeds, for archs that run
        ("base.extra_seeds", [5, 1234], "base.extra_seeds: [1234] already in base.seeds [1234]"),
        ("base.extra_seeds", [5, 6, 5], "base.extra_seeds: extra_seeds must be distinct; repeated: [5]"),
        ("base.extra_seeds", [-1], "base.extra_seeds.0: Input should be greater than or equal to 0"),
        (
            "base",
            {"seeds": [1], "extra_seeds": [2], "extra_archs": ["dense", "gshard"]},
            "base.extra_archs: 'gshard' is not in archs.run ['dense', 'switch']",
        ),
        # the freezing ablation: MoE archs that run, an after-IT baseline with nothing frozen
        (
            "freeze_ablation",
            {"archs": ["gshard"], "freeze": ["gate"]},
            "freeze_ablation.archs: 'gshard' is not",
        ),
        (
            "freeze_ablation",
            {"archs": ["dense"], "freeze": ["gate"]},
            "freeze_ablation.archs: 'dense' is dense",
        ),
        ("freeze_ablation.freeze", ["none"], "freeze_ablation.freeze.0: Input should be 'gate', 'experts'"),
        ("prepare.bbh.max_examples", 0, "prepare.bbh.max_examples: Input should be greater than 0"),
        # the held-in suite scores the instruct stage's validation pairs: no more than there are
        ("evaluate.heldin_examples", 2000, "evaluate.heldin_examples: 2000 > instruct.val_examples 1024"),
        (
            "evaluate.heldin_examples",
            0,
            "evaluate.heldin_examples: Input should be greater than or equal to 1",
        ),
        # invalid combination
        ("prepare.mmlu", {"kind": "hub"}, "prepare.mmlu.path: required with kind 'hub'"),
        (
            "prepare.pretrain",
            {"kind": "embedded", "path": "x.jsonl"},
            "prepare.pretrain.path: not used with kind 'embedded'",
        ),
        (
            "prepare.flan",
            {"kind": "local", "path": "f.jsonl", "revision": "v1"},
            "prepare.flan.revision: only for kind 'hub'",
        ),
        # model, archs, pretrain (the training engine's sections)
        ("model.preset", "huge", "model.preset: Input should be"),
        ("model.moe.num_experts", 0, "model.moe.num_experts: Input should be greater than or equal to 1"),
        ("archs.run", ["dense", "moe64"], "archs.run: unknown arch 'moe64'"),
        (
            "archs.variants.switch",
            {"moe": {"router": "switch", "top_k": 2}},
            "archs.variants.switch.moe.top_k: only used by router 'top_k'",
        ),
        (
            "archs.variants.switch",
            {"moe": {"router": "expert_choice"}},
            "archs.variants.switch.moe.decoder_router: expert_choice sees future tokens",
        ),
        (
            "archs.variants.dense",
            {"dense_twin_of": "gshardd"},
            "archs.variants.dense.dense_twin_of: unknown arch",
        ),
        (
            "archs.variants.dense",
            {"dense_twin_of": "dense"},
            "archs.variants.dense.dense_twin_of: circular reference",
        ),
        (
            "pretrain.parallel",
            {"nproc": 16, "ep": 16},
            "pretrain.parallel.ep: 16 does not divide num_experts 8",
        ),
        ("pretrain.parallel", {"nproc": 2, "ep": 4}, "pretrain.parallel.ep: 4 does not divide nproc 2"),
        ("pretrain.parallel.nproc", 0, "pretrain.parallel.nproc: Input should be greater than or equal to 1"),
        ("pretrain.grad_accum", 3, "pretrain.batch_size: 32 is not divisible by nproc x grad_accum = 3"),
        ("pretrain.optimizer", "sgd", "pretrain.optimizer: Input should be 'adamw' or 'adafactor'"),
    ],
)
def test_bad_params_name_the_dotted_key(repo_root, dotted, value, expected):
    lines = _error(_with(repo_root, dotted, value))
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines


def test_seeds_of_adds_extra_seeds_to_extra_archs_only(repo_root):
    params = parse_params(_with(repo_root, "base", {"seeds": [1, 2], "extra_seeds": [9, 8]}))
    assert params.seeds_of("dense") == params.seeds_of("switch") == [1, 2, 9, 8]
    assert params.seeds_of("gshard") == [1, 2]
    # without extra seeds extra_archs is inert: archs.run may leave its archs out
    data = _with(repo_root, "archs.run", ["gshard"])
    assert parse_params(data).seeds_of("gshard") == [1234] == parse_params(data).seeds_of("dense")


def test_section_models_report_their_own_keys(repo_root):
    # the tokenize and embedded sections come from their own modules: same error format
    lines = _error(_with(repo_root, "tokenize.vocab_size", -5))
    assert lines[0].startswith("tokenize.vocab_size: "), lines
    lines = _error(_with(repo_root, "prepare.embedded.seeed", 1))
    assert lines == ["prepare.embedded.seeed: unknown key"]


def test_not_a_mapping_and_bad_files(tmp_path):
    assert _error([1, 2]) == ["<root>: must be a mapping of sections, got list"]
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: {seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("stage", ["prepare", "tokenize", "pretrain"])
def test_stage_exits_2_before_writing_anything(tmp_path, repo_root, python, stage):
    data = _with(repo_root, "prepare.embedded.seed", "not-a-seed")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.run([python, "-m", f"stages.{stage}"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "prepare.embedded.seed: Input should be a valid integer" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data/, metrics/, mlruns.db


def test_arch_configs_and_dense_twins(repo_root):
    params = load_params(repo_root / "params.yaml")
    switch, gshard = params.arch_config("switch"), params.arch_config("gshard")
    assert switch.moe.router == "switch" and gshard.moe.router == "gshard"
    assert params.arch_config("expert_choice").moe.decoder_router == "gshard"
    assert params.arch_config("st_moe").moe.resolved_z_loss_coef == 1e-3
    dense = params.arch_config("dense")
    assert dense.moe is None and dense.d_ff == switch.d_ff  # top-1: same FFN width
    # a dense twin of a top-2 arch is wider: equal FFN FLOPs per token
    data = _with(repo_root, "archs.variants.dense", {"dense_twin_of": "gshard"})
    from flanmoe.model.flops import accounting

    twin = parse_params(data).arch_config("dense")
    acc_t, acc_g = accounting(twin, 1000), accounting(gshard, 1000)
    assert acc_t.breakdown["ffn"] == pytest.approx(acc_g.breakdown["ffn"])
