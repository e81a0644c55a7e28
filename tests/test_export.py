"""Exported model directory: exact round trip, tied weights, tokenizer copy, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flanmoe.model.config import ModelConfig
from flanmoe.model.pretrained import load_config, load_pretrained, save_pretrained
from flanmoe.model.transformer import build_model

V = 64
MICRO = dict(d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)
ARCHS = {
    "dense": ModelConfig(**MICRO),
    "flan_ec": ModelConfig(
        **MICRO, moe={"num_experts": 4, "router": "expert_choice", "decoder_router": "gshard"}
    ),
    "tied_switch": ModelConfig(**MICRO, tie_embeddings=True, ffn="relu", moe={"num_experts": 4}),
}


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, V, (2, 8), generator=g)
    x[0, 5:] = 0
    return x, torch.randint(2, V, (2, 4), generator=g)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_round_trip_is_exact(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ARCHS[arch], V).eval()
    out = save_pretrained(model, tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "flanmoe" and config["format_version"] == 1 and config["vocab_size"] == V
    assert load_config(out) == ARCHS[arch].model_copy(update={"vocab_size": V})

    loaded = load_pretrained(out).eval()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x, y = _inputs()
    assert torch.equal(loaded(x, labels=y).logits, model(x, labels=y).logits)
    if arch == "tied_switch":  # one embedding, no duplicated head
        assert "lm_head.weight" not in load_file(str(out / "model.safetensors")) and loaded.lm_head is None


def test_device_dtype_gathered_state_dict_and_tokenizer(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(ARCHS["flan_ec"], V)
    tok = tmp_path / "tok" / "tokenizer.json"
    tok.parent.mkdir()
    tok.write_text('{"version": "1.0"}')
    # A gathered state dict as a compiled/distributed wrapper would key it; non-contiguous tensors.
    sd = {
        f"_orig_mod.{k}": v.t().contiguous().t() if v.dim() == 2 else v for k, v in model.state_dict().items()
    }
    assert not sd["_orig_mod.embed.weight"].is_contiguous()
    out = save_pretrained(model, tmp_path / "m", tokenizer_path=tok.parent, state_dict=sd)
    assert (out / "tokenizer.json").read_text() == tok.read_text()
    loaded = load_pretrained(out, device="cpu", dtype=torch.float64)
    assert loaded.embed.weight.dtype == torch.float64
    torch.testing.assert_close(loaded.embed.weight, model.embed.weight.double())
    assert save_pretrained(model, tmp_path / "m2", tokenizer_path=tok).joinpath("tokenizer.json").is_file()


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_pretrained(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_pretrained(tmp_path)
    model = build_model(ARCHS["dense"], V)
    out = save_pretrained(model, tmp_path / "m")
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors: missing"):
        load_pretrained(out)
    cfg_file = out / "config.json"
    good = json.loads(cfg_file.read_text())
    bad_cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({**good, "format": "hf_t5"}), "format 'hf_t5', expected 'flanmoe'"),
        (json.dumps({**good, "format_version": 2}), "format_version 2 is not supported"),
        (json.dumps({**good, "d_model": -1}), "invalid model config: d_model"),
        (json.dumps({**good, "hidden": 3}), "invalid model config: hidden: unknown key"),
    ]
    for text, msg in bad_cases:
        cfg_file.write_text(text)
        with pytest.raises(ValueError, match=msg) as err:
            load_config(out)
        assert str(cfg_file) in str(err.value)
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        save_pretrained(model, tmp_path / "m3", tokenizer_path=tmp_path / "none.json")
    sd = model.state_dict()
    with pytest.raises(ValueError, match="missing \\['embed.weight'\\]"):
        save_pretrained(
            model, tmp_path / "m4", state_dict={k: v for k, v in sd.items() if k != "embed.weight"}
        )
    with pytest.raises(ValueError, match="shapes do not match"):
        save_pretrained(model, tmp_path / "m5", state_dict={**sd, "embed.weight": torch.zeros(3, 16)})


def test_wrong_weights_file_is_refused(tmp_path: Path) -> None:
    out = save_pretrained(build_model(ARCHS["dense"], V), tmp_path / "dense")
    moe = save_pretrained(build_model(ARCHS["flan_ec"], V), tmp_path / "moe")
    (out / "model.safetensors").replace(tmp_path / "dense.safetensors")
    (moe / "model.safetensors").replace(out / "model.safetensors")  # MoE weights under a dense config
    with pytest.raises(ValueError, match="model.safetensors: keys do not match the config: missing"):
        load_pretrained(out)
