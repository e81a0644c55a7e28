"""Backbone: config presets, T5.1.1 shapes, loss, padding, causality, KV-cache generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from flanmoe.model.config import ModelConfig, arch_presets, model_config_for_arch
from flanmoe.model.generate import KVCache, greedy_generate
from flanmoe.model.layers import relative_position_bucket
from flanmoe.model.moe import MoELayer
from flanmoe.model.transformer import build_model

V = 97
SMALL = dict(d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)


def tiny_model(moe: dict | None = None, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**SMALL, **kw}, moe=moe)
    return build_model(cfg, V).double().eval()


def batch(seed: int = 0, B: int = 3, S: int = 9, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, V, (B, S), generator=g)
    x[0, 6:] = 0  # padding
    y = torch.randint(3, V, (B, T), generator=g)
    y[1, 4:] = -100
    return x, y


def test_base_preset_matches_t5_v1_1_base_param_count() -> None:
    # google/t5-v1_1-base: 247,577,856 parameters (untied embeddings, vocab 32128); tolerance 0.1%.
    with torch.device("meta"):
        model = build_model(ModelConfig(preset="base"), vocab_size=32128)
        tied = build_model(ModelConfig(preset="base", tie_embeddings=True), vocab_size=32128)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 247_577_856) <= 0.001 * 247_577_856
    assert n - sum(p.numel() for p in tied.parameters()) == 32128 * 768


def test_preset_fields_and_overrides() -> None:
    cfg = ModelConfig(preset="tiny", d_model=64)
    assert cfg.d_model == 64 and cfg.d_ff == 512 and cfg.num_encoder_layers == 2
    with pytest.raises(ValidationError, match="d_model"):
        ModelConfig(preset=None)
    with pytest.raises(ValidationError):
        ModelConfig(preset="tiny", hidden=3)  # unknown keys are errors
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(ModelConfig())
    with pytest.raises(ValidationError, match="ffn"):
        ModelConfig(ffn="swiglu")


def test_relu_ffn_is_the_switch_layout() -> None:
    # ffn: relu = T5 v1.0 / Switch (HF SwitchTransformersDenseActDense): wi, wo; no gate matrix.
    model = tiny_model({"num_experts": 4}, ffn="relu")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".ffn." in n}
    assert names == {"wi", "wo", "weight"}  # dense FFN wi/wo Linear weights and experts' wi/wo, router
    dense = model.encoder.blocks[0].ffn
    x = torch.randn(5, 32, dtype=torch.float64)
    torch.testing.assert_close(dense(x), torch.relu(x @ dense.wi.weight.T) @ dense.wo.weight.T)


def test_arch_presets_build() -> None:
    assert set(arch_presets()) == {"dense", "switch", "gshard", "expert_choice", "st_moe"}
    for arch in arch_presets():
        cfg = model_config_for_arch(arch, **SMALL, moe={"num_experts": 4} if arch != "dense" else None)
        model = build_model(cfg, V)
        routers = {
            n.split(".blocks")[0]: type(m.router).__name__
            for n, m in model.named_modules()
            if isinstance(m, MoELayer)
        }
        if arch == "expert_choice":
            assert routers == {"encoder": "ExpertChoiceRouter", "decoder": "TokenChoiceTopKRouter"}
        assert (arch == "dense") == (not routers)


@pytest.mark.parametrize("moe_every,expected", [(2, [1, 3]), (4, [3]), (1, [0, 1, 2, 3])])
def test_moe_every_places_layers(moe_every: int, expected: list[int]) -> None:
    model = tiny_model({"num_experts": 2, "moe_every": moe_every}, num_encoder_layers=4, num_decoder_layers=4)
    for stack in (model.encoder, model.decoder):
        assert [i for i, b in enumerate(stack.blocks) if b.is_moe] == expected


@pytest.mark.parametrize("moe_every,offset,expected", [(4, 1, [1]), (2, 0, [0, 2]), (3, 1, [1])])
def test_moe_offset_places_layers(moe_every: int, offset: int, expected: list[int]) -> None:
    # moe_offset = 1 is HF Switch's placement (i % sparse_step == 1); the default is the last block.
    moe = {"num_experts": 2, "moe_every": moe_every, "moe_offset": offset}
    model = tiny_model(moe, num_encoder_layers=4, num_decoder_layers=4)
    for stack in (model.encoder, model.decoder):
        assert [i for i, b in enumerate(stack.blocks) if b.is_moe] == expected
    with pytest.raises(ValidationError, match="moe_offset"):
        ModelConfig(**SMALL, moe={"moe_every": 2, "moe_offset": 2})


def test_relative_position_buckets_t5_values() -> None:
    rel = torch.tensor([0, -1, 1, -7, 8, -20, 20, -200, 200])
    bi = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # 16 buckets per direction, exact below 8, then 8 + floor(log(n/8)/log(16) * 8); future +16.
    assert bi.tolist() == [0, 1, 17, 7, 24, 10, 26, 15, 31]
    causal = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # 32 buckets for the past only, exact below 16; future keys share bucket 0 (and are masked).
    assert causal.tolist() == [0, 1, 0, 7, 0, 17, 0, 31, 0]  # 16 + floor(log(20/16) / log(8) * 16) = 17


def test_loss_ignores_minus_100_and_pad() -> None:
    model = tiny_model()
    x, y = batch()
    y[2, 5] = 0  # pad label: ignored too
    out = model(x, labels=y)
    keep = (y != -100) & (y != 0)
    manual = F.cross_entropy(out.logits[keep], y[keep])
    torch.testing.assert_close(out.lm_loss, manual)
    assert out.aux_loss == 0 and out.loss == out.lm_loss and out.router_stats == {}


def test_moe_output_has_aux_and_stats() -> None:
    model = tiny_model({"num_experts": 4, "router": "st_moe"})
    model.train()
    x, y = batch()
    out = model(x, labels=y)
    assert set(out.router_stats) == {"encoder.1", "decoder.1"}
    enc = out.router_stats["encoder.1"]
    assert enc.num_tokens.item() == int((x != 0).sum())  # padding is not routed
    assert out.router_stats["decoder.1"].num_tokens.item() == int(((y != -100) & (y != 0)).sum())
    assert enc.expert_fraction.sum().item() == pytest.approx(1.0)
    expected = 2 * (0.01 * out.load_balance_loss + 1e-3 * out.z_loss)  # two layers; mean x 2 = sum
    torch.testing.assert_close(out.aux_loss, expected.to(out.aux_loss.dtype))
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_loss)
    out.loss.backward()
    gate = model.encoder.blocks[1].ffn.router.gate.weight
    assert gate.grad is not None and gate.grad.abs().sum() > 0


@pytest.mark.parametrize("moe", [None, {"num_experts": 4, "router": "gshard", "dropless": True}])
def test_encoder_ignores_padding(moe: dict | None) -> None:
    model = tiny_model(moe)
    x, _ = batch()
    short = model.run_encoder(x[:1, :6], None).hidden
    padded = model.run_encoder(x[:1], x[:1] != 0).hidden
    torch.testing.assert_close(padded[:, :6], short)


def test_decoder_is_causal() -> None:
    model = tiny_model({"num_experts": 4, "router": "gshard", "dropless": True})
    x, y = batch()
    y2 = y.clone()
    y2[:, 4:] = 5
    a, b = model(x, labels=y.clamp_min(3)).logits, model(x, labels=y2.clamp_min(3)).logits
    torch.testing.assert_close(a[:, :5], b[:, :5])  # logits up to position 4 see labels < 4 only
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize(
    "moe",
    [
        None,
        {"num_experts": 4, "router": "switch", "dropless": True},
        {"num_experts": 4, "router": "expert_choice", "decoder_router": "gshard", "dropless": True},
        {"num_experts": 4, "router": "switch", "dropless": True, "ffn": "relu"},
    ],
)
def test_kv_cache_generation_equals_uncached(moe: dict | None) -> None:
    moe = dict(moe) if moe is not None else None
    ffn = moe.pop("ffn", "gated_gelu") if moe is not None else "gated_gelu"
    model = tiny_model(moe, seed=3, ffn=ffn)
    x, _ = batch(seed=1)
    cached = greedy_generate(model, x, max_new_tokens=8, eos_id=1)
    full = greedy_generate(model, x, max_new_tokens=8, eos_id=1, use_cache=False)
    assert cached.shape == (3, 8)
    assert torch.equal(cached, full)
    # Stronger than argmax: cached step logits equal the full decoder's logits at each position.
    enc = model.run_encoder(x, x != 0).hidden
    dec = torch.cat([torch.zeros(3, 1, dtype=torch.long), cached[:, :-1]], dim=1)
    ref = model.run_decoder(dec, enc, x != 0).logits
    cache = KVCache.for_model(model)
    steps = [cache.decode(model, dec[:, t : t + 1], enc, x != 0).logits for t in range(dec.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), ref)


def test_generation_stops_at_eos_and_pads_after() -> None:
    model = tiny_model(seed=4)
    x, _ = batch(seed=2)
    first = greedy_generate(model, x, max_new_tokens=1)[:, 0]
    model.lm_head.weight.data[1] = model.lm_head.weight.data[first[0]] * 1.5  # row 0 emits eos (id 1) first
    out = greedy_generate(model, x, max_new_tokens=6, eos_id=1)
    assert out[0, 0] == 1 and (out[0, 1:] == 0).all()


def test_param_groups_for_freezing() -> None:
    model = tiny_model({"num_experts": 2})
    groups = {model.param_group(n) for n, _ in model.named_parameters()}
    assert groups == {"router", "experts", "dense"}
    assert model.param_group("encoder.blocks.1.ffn.router.gate.weight") == "router"
    assert model.param_group("encoder.blocks.1.ffn.experts.wi_0") == "experts"


def test_blocks_and_stacks_return_aux_as_values_fsdp_can_traverse() -> None:
    from torch.utils._pytree import tree_flatten

    model = tiny_model({"num_experts": 4, "router": "st_moe"})
    model.train()
    x, _ = batch()
    enc = model.run_encoder(x, x != 0)
    assert list(enc.aux) == ["encoder.1"] and enc.self_kv == () and enc.cross_kv == ()
    leaves, _ = tree_flatten(enc)  # what FSDP sees of a unit's output: the aux loss is one of them
    assert any(t is enc.aux["encoder.1"].loss for t in leaves)
    out = model(x, labels=batch()[1])
    assert list(out.router_stats) == ["encoder.1", "decoder.1"]


def test_model_package_imports_one_way_without_cycles() -> None:
    """config -> layers / router / experts / moe -> transformer -> generate, pretrained -> hf;
    function-level imports count, ``if TYPE_CHECKING:`` ones do not."""
    import ast
    from pathlib import Path

    import flanmoe

    root = Path(flanmoe.__file__).parent
    graph: dict[str, set[str]] = {}
    for f in [*(root / "model").glob("*.py"), *(root / "parallel").glob("*.py")]:
        deps: set[str] = set()
        todo = list(ast.parse(f.read_text()).body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                todo.extend(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flanmoe."):
                deps.add(node.module)  # type: ignore[arg-type]
            todo.extend(ast.iter_child_nodes(node))
        graph[f"flanmoe.{f.parent.name}.{f.stem}"] = deps
    lower = ["config", "init", "layers", "stats", "router", "dispatch", "experts", "moe", "loss"]
    for name in lower:
        assert not {"flanmoe.model.transformer", "flanmoe.model.hf"} & graph[f"flanmoe.model.{name}"], name
    above = {"flanmoe.model.hf", "flanmoe.model.generate", "flanmoe.model.pretrained"}
    assert not above & graph["flanmoe.model.transformer"]

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    assert [m for m in graph if not m.endswith("__init__") and m in reach(m)] == []
