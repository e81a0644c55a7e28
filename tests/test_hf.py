"""Hugging Face parity: tiny random T5 / Switch models built offline from configs, saved with
``save_pretrained``, imported with ``flanmoe.model.hf``; logits, losses and greedy generation equal to
transformers' in float32; export loads back into both."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flanmoe.model.config import ModelConfig
from flanmoe.model.generate import greedy_generate
from flanmoe.model.hf import config_from_hf, load_hf, read_hf_config, save_hf
from flanmoe.model.pretrained import save_pretrained
from flanmoe.model.transformer import build_model

transformers = pytest.importorskip("transformers")

V = 64
SHAPE = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4)
SWITCH = dict(num_experts=4, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, expert_capacity=64)
ATOL = 1e-5
OURS = dict(d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def hf_switch(path: Path, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.SwitchTransformersConfig(**{**SHAPE, **SWITCH, **kw}, decoder_start_token_id=0)
    model = transformers.SwitchTransformersForConditionalGeneration(cfg)
    if not cfg.tie_word_embeddings:  # transformers 5 then unties the stacks' embeddings too: one embedding
        with torch.no_grad():
            for stack in (model.encoder, model.decoder):
                stack.embed_tokens.weight.copy_(model.shared.weight)
    return _randomize_norms(model, path)


def hf_t5(path: Path, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, **kw}
    cfg = transformers.T5Config(**SHAPE, **kw, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(cfg)
    if model.lm_head.weight is model.shared.weight and not cfg.scale_decoder_outputs:
        model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32) * 32**-0.5)  # a real T5.1.1 head
    return _randomize_norms(model, path)


def _randomize_norms(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Norm weights away from 1 (so a swapped norm shows), save to ``path``, eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    return model.eval()


def batch(B: int = 2, S: int = 10, T: int = 6, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, V, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    if B > 1:
        x[1, 7:], mask[1, 7:] = 0, 0  # right padding
    y = torch.randint(2, V, (B, T), generator=g)  # no pad id: HF's loss counts label 0, ours ignores it
    if B > 1:
        y[0, 4:] = -100
    return x, mask, y


def assert_same_outputs(ours, hf, x, mask, y, **hf_kw) -> None:
    out = ours(x, mask, labels=y)
    ref = hf(input_ids=x, attention_mask=mask, labels=y, **hf_kw)
    real = y != -100  # HF routes padded decoder positions, ours does not: their logits differ
    assert (out.logits - ref.logits)[real].abs().max() <= ATOL
    if hf_kw.get("output_router_logits"):
        assert abs(out.loss - ref.loss) <= ATOL
    else:
        assert abs(out.lm_loss - ref.loss) <= ATOL


@torch.no_grad()
def test_switch_import_matches_hf(tmp_path: Path) -> None:
    hf = hf_switch(tmp_path)
    ours = load_hf(tmp_path).eval()
    moe = ours.cfg.moe
    assert (
        moe.moe_every == 2 and moe.moe_offset == 1 and moe.expert_capacity == 64 and ours.cfg.tie_embeddings
    )
    assert [b.is_moe for b in ours.encoder.blocks] == [False, True]
    assert_same_outputs(ours, hf, *batch())


@torch.no_grad()
def test_switch_sparse_step_4_places_like_hf(tmp_path: Path) -> None:
    # step 4: HF blocks 1 and 5 are sparse (flanmoe's default would be 3 and 7)
    hf = hf_switch(
        tmp_path, num_layers=8, num_decoder_layers=8, num_sparse_encoder_layers=2, num_sparse_decoder_layers=2
    )
    ours = load_hf(tmp_path).eval()
    assert [i for i, b in enumerate(ours.decoder.blocks) if b.is_moe] == [1, 5]
    assert_same_outputs(ours, hf, *batch())


@torch.no_grad()
def test_switch_capacity_drops_like_hf(tmp_path: Path) -> None:
    # expert_capacity counts per sequence in both: 16 tokens a sequence, 4 experts x 2 slots.
    hf = hf_switch(tmp_path, expert_capacity=2)
    ours = load_hf(tmp_path).eval()
    x, mask, y = batch(B=2, S=16, T=10)
    out = ours(x, mask, labels=y)
    assert out.router_stats["encoder.1"].dropped_tokens.item() >= 8  # 16 tokens, 8 slots: capacity binds
    assert out.router_stats["decoder.1"].dropped_tokens.item() > 0
    assert_same_outputs(ours, hf, x, mask, y)


@torch.no_grad()
def test_switch_total_loss_with_router_losses_matches_hf(tmp_path: Path) -> None:
    # HF adds z and load-balancing losses with output_router_logits; alike for one sparse layer per
    # stack and one unpadded sequence (module docstring).
    hf = hf_switch(tmp_path, router_z_loss_coef=0.1, router_aux_loss_coef=0.1)
    ours = load_hf(tmp_path).eval()
    assert ours.cfg.moe.z_loss_coef == 0.1 and ours.cfg.moe.load_balance_coef == 0.1
    x, mask, y = batch(B=1)
    assert_same_outputs(ours, hf, x, mask, y, output_router_logits=True)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # T5.1.1: gated GELU, untied unscaled head
        {"feed_forward_proj": "relu", "tie_word_embeddings": True},  # T5 v1.0: tied, scaled head
    ],
    ids=["t5.1.1", "t5v1.0"],
)
@torch.no_grad()
def test_t5_import_matches_hf(tmp_path: Path, kw: dict) -> None:
    hf = hf_t5(tmp_path, **kw)
    ours = load_hf(tmp_path).eval()
    assert ours.cfg.moe is None and ours.cfg.tie_embeddings == bool(kw)
    assert ours.cfg.ffn == ("relu" if kw else "gated_gelu")
    assert_same_outputs(ours, hf, *batch())


@torch.no_grad()
def test_t5_tied_but_unscaled_head_imports_untied(tmp_path: Path) -> None:
    # transformers 5 writes a T5.1.1 config as tie_word_embeddings: true, scale_decoder_outputs: false,
    # without lm_head.weight when the head is the embedding: untied here, a copy of the embedding.
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        **SHAPE, feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0
    )
    hf = _randomize_norms(transformers.T5ForConditionalGeneration(cfg), tmp_path)
    assert (
        hf.lm_head.weight is hf.shared.weight and read_hf_config(tmp_path)["scale_decoder_outputs"] is False
    )
    ours = load_hf(tmp_path).eval()
    assert not ours.cfg.tie_embeddings and torch.equal(ours.lm_head.weight, ours.embed.weight)
    # a copy: training moves them apart, and safetensors refuses shared storage on export
    assert ours.lm_head.weight.data_ptr() != ours.embed.weight.data_ptr()
    save_pretrained(ours, tmp_path / "exported")
    assert_same_outputs(ours, hf, *batch())


@torch.no_grad()
def test_reads_pytorch_bin_and_sharded_checkpoints(tmp_path: Path) -> None:
    hf = hf_switch(tmp_path / "one")
    expected = load_hf(tmp_path / "one").state_dict()
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "bin").mkdir()
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # with the tied copies, as 4.x wrote
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    for name in ("sharded", "bin"):
        got = load_hf(tmp_path / name).state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


@pytest.mark.parametrize("arch", ["switch_untied", "switch_capacity_2", "t5"])
@torch.no_grad()
def test_greedy_generation_matches_hf(tmp_path: Path, arch: str) -> None:
    # untied heads: a random tied model copies its input token (the start token 0) forever
    if arch == "t5":
        hf = hf_t5(tmp_path)
    else:  # capacity 2: the encoder drops tokens; each decoding step routes one token a sequence
        hf = hf_switch(tmp_path, tie_word_embeddings=False, expert_capacity=2 if "capacity" in arch else 64)
    with torch.no_grad():
        hf.lm_head.weight[1] *= 2.0  # eos more likely: some sequences end early, then pad
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path).eval()
    assert not ours.cfg.tie_embeddings
    x, mask, _ = batch(B=3, S=10)
    x[2, 5:], mask[2, 5:] = 0, 0
    got = greedy_generate(ours, x, mask, max_new_tokens=8)
    ref = hf.generate(input_ids=x, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=1)
    assert len(got.unique()) > 3 and (got == 1).any()  # not a constant; an eos before the end
    assert torch.equal(got, ref[:, 1:])  # HF's output starts with the decoder start token
    assert_same_outputs(ours, hf, *batch())


def our_model(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    moe = dict(num_experts=4, moe_offset=1, expert_capacity=64, z_loss_coef=0.01, router_jitter=0.01)
    cfg = {
        "switch": ModelConfig(**OURS, ffn="relu", tie_embeddings=True, moe=moe),
        "switch_untied": ModelConfig(**OURS, ffn="relu", moe=moe),
        "t5.1.1": ModelConfig(**OURS),
        "t5_tied": ModelConfig(**OURS, ffn="relu", tie_embeddings=True),
    }[kind]
    model = build_model(cfg, V)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["switch", "switch_untied", "t5.1.1", "t5_tied"])
@torch.no_grad()
def test_export_reimport_is_identity_and_transformers_agrees(tmp_path: Path, kind: str) -> None:
    ours = our_model(kind)
    save_hf(ours, tmp_path)
    back = load_hf(tmp_path).eval()
    assert back.cfg.model_dump(exclude={"preset", "vocab_size"}) == ours.cfg.model_dump(
        exclude={"preset", "vocab_size"}
    )
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    expected = "Switch" if kind.startswith("switch") else "T5"
    assert type(hf).__name__.startswith(expected)
    assert_same_outputs(ours, hf, *batch())


@torch.no_grad()
def test_hf_import_export_roundtrip_keeps_every_tensor(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    hf_switch(tmp_path / "hf")
    save_hf(load_hf(tmp_path / "hf"), tmp_path / "out")
    src, out = (
        load_file(tmp_path / "hf" / "model.safetensors"),
        load_file(tmp_path / "out" / "model.safetensors"),
    )
    assert all(torch.equal(src[k], out[k]) for k in src)
    copies = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}  # the embedding, written for HF
    assert out.keys() - src.keys() == copies and all(
        torch.equal(out[k], src["shared.weight"]) for k in copies
    )
    hf_cfg, out_cfg = read_hf_config(tmp_path / "hf"), read_hf_config(tmp_path / "out")
    for key in ("num_sparse_encoder_layers", "expert_capacity", "router_z_loss_coef", "router_jitter_noise"):
        assert out_cfg[key] == hf_cfg[key]


@pytest.mark.parametrize(
    "moe,match",
    [
        (dict(router="gshard"), "router: 'gshard'"),
        (dict(router="st_moe"), "router: 'st_moe'"),
        (dict(router="expert_choice", decoder_router="switch"), "router: 'expert_choice'"),
        (dict(decoder_router="gshard"), "decoder_router: 'gshard'"),
        (dict(moe_every=2, moe_offset=0), "moe_every"),
        (dict(dropless=True, expert_capacity=None), "expert_capacity"),
        (dict(expert_capacity=None), "expert_capacity"),
    ],
)
def test_export_refuses_what_hf_cannot_express(tmp_path: Path, moe: dict, match: str) -> None:
    cfg = ModelConfig(
        **OURS, ffn="relu", moe={"num_experts": 4, "moe_offset": 1, "expert_capacity": 8, **moe}
    )
    with pytest.raises(ValueError, match=match):
        save_hf(build_model(cfg, V), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_export_refuses_gated_gelu_experts_and_hf_placement_mismatch(tmp_path: Path) -> None:
    gated = ModelConfig(**OURS, moe={"num_experts": 4, "moe_offset": 1, "expert_capacity": 8})
    with pytest.raises(ValueError, match="ffn: 'gated_gelu'"):
        save_hf(build_model(gated, V), tmp_path)
    four = dict(OURS, num_encoder_layers=4, num_decoder_layers=4)  # default placement: block 3
    last = ModelConfig(**four, ffn="relu", moe={"num_experts": 4, "moe_every": 4, "expert_capacity": 8})
    with pytest.raises(ValueError, match=r"moe_every: MoE blocks \[3\]"):
        save_hf(build_model(last, V), tmp_path)
    # an explicit capacity makes a capacity-factor model exportable
    ok = ModelConfig(**OURS, ffn="relu", moe={"num_experts": 4, "moe_offset": 1})
    assert read_hf_config(save_hf(build_model(ok, V), tmp_path, expert_capacity=16))["expert_capacity"] == 16


BASE_SWITCH = dict(model_type="switch_transformers", **SHAPE, **SWITCH)


@pytest.mark.parametrize(
    "hf,match",
    [
        (dict(BASE_SWITCH, router_bias=True), "router_bias"),
        (dict(BASE_SWITCH, dense_act_fn="gelu"), "dense_act_fn"),
        (dict(BASE_SWITCH, pad_token_id=3), "pad_token_id"),
        (
            dict(BASE_SWITCH, num_layers=4, num_decoder_layers=4, num_sparse_decoder_layers=2),
            "num_sparse_decoder",
        ),
        (dict(model_type="t5", **SHAPE, feed_forward_proj="gated-silu"), "feed_forward_proj"),
        (dict(model_type="bart", **SHAPE), "model_type"),
        ({k: v for k, v in BASE_SWITCH.items() if k != "num_layers"}, "num_layers: missing"),
    ],
)
def test_import_refuses_what_flanmoe_cannot_express(hf: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_hf(hf)
