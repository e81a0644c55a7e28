"""Hugging Face checkpoints in and out: ``T5ForConditionalGeneration`` (T5.1.1 / T5 v1.0) and
``SwitchTransformersForConditionalGeneration``. The only module that knows HF key names; it reads and
writes ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``) itself, without importing
``transformers``.

::

    model = load_hf("switch-base-8/")                      # -> FlanMoEModel (training mode)
    save_hf(model, "out/hf", expert_capacity=64)           # -> a directory transformers loads
    resolve_hf_path("google/switch-base-8")                # -> its snapshot in the HF cache (offline)

HF conventions, as read in the source of transformers 5.24 (the version the tests ran against):

- Sparse layers: HF makes block ``i`` sparse when ``i % sparse_step == 1`` (every block when
  ``sparse_step == 1``), ``sparse_step = num_layers // num_sparse_{encoder,decoder}_layers``: blocks
  1, 3, 5... for step 2, blocks 1, 5, 9... for step 4. flanmoe's default puts the MoE block last in
  each group of ``moe_every`` (blocks 3, 7, 11 for 4), so an import sets ``moe_offset = 1 % step``.
  Encoder and decoder must share the step (flanmoe has one ``moe_every``).
- Capacity and token dropping: HF Switch routes each *sequence* as a group, with a fixed
  ``expert_capacity`` slots per expert; a token that overflows its expert gets a zero FFN output,
  earlier positions of the sequence served first. An import sets ``MoEConfig.expert_capacity``, which
  flanmoe counts per sequence in the same order, so the same tokens are dropped (tested with
  padding, and in generation). One difference: HF routes padding and lets it take slots, flanmoe
  never routes padding; with right padding (after every real token) no real token is affected. HF's
  cached generation routes one token per sequence and step, so it never drops there, nor does
  flanmoe's. flanmoe's capacity factors (``capacity_factor_train/eval``) count per batch and have no
  HF equivalent; for fine-tuning an import, ``moe_overrides={"expert_capacity": None}`` switches to
  them (or ``{"dropless": True}``).
- Router: top-1 of an fp32 softmax (``router_dtype``), output scaled by the chosen probability,
  multiplicative input jitter in training (``router_jitter_noise``), no bias (``router_bias: true``
  is refused). ``router_ignore_padding_tokens`` is stored but unused by transformers 5.
- Auxiliary losses: HF adds ``router_z_loss_coef * z + router_aux_loss_coef * lb`` only with
  ``output_router_logits=True`` and only for stacks whose sparse step is > 1; each stack's loss is
  computed once over the router logits of all its sparse layers concatenated along the sequence,
  per sequence, then averaged over the batch (padding included); ``lb`` counts choices before
  capacity. flanmoe computes one loss per MoE layer over the non-padding tokens of the batch and sums
  the layers. They agree for one sparse layer per stack, one unpadded sequence (tested).
- LM head: when HF scales the decoder output by ``d_model**-0.5`` (Switch and T5 v1.0 with
  ``tie_word_embeddings``) flanmoe uses a tied head (it scales likewise). transformers 5 always ties
  T5's head to ``shared`` and keeps the scaling choice in ``scale_decoder_outputs``; a checkpoint with
  its own ``lm_head.weight`` stays untied. An unscaled head (T5.1.1) imports untied (a copy of
  ``shared`` if the file has no ``lm_head.weight``); a scaled head that differs from ``shared``
  imports untied with the scale folded into its weight.
- pad = decoder start = 0 (refused otherwise); T5 does not scale attention logits; relative position
  bias lives in block 0 of each stack; T5.1.1's gated GELU is ``gelu_new`` (tanh approximation).

Export writes ``SwitchTransformersForConditionalGeneration`` for an MoE model and
``T5ForConditionalGeneration`` for a dense one, and refuses (``ValueError`` naming the setting) what HF
cannot express: routers other than top-1, gated-GELU experts, MoE placements other than HF's, and a
capacity given as factors or dropless unless ``expert_capacity`` is passed. Training-only settings
HF has no field for (``expert_dropout``, ``min_capacity``, ``normalize_gates``, capacity factors) are
not written; ``router_dtype`` is always float32.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flanmoe.model.config import ModelConfig, MoEConfig
from flanmoe.model.transformer import FlanMoEModel

T5, SWITCH = "t5", "switch_transformers"
CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE = "config.json", "model.safetensors", "pytorch_model.bin"
ARCHITECTURES = {T5: "T5ForConditionalGeneration", SWITCH: "SwitchTransformersForConditionalGeneration"}
# Copies of shared.weight that HF may or may not write.
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


# ----------------------------------------------------------------------------- config


def hf_sparse_step(num_layers: int, num_sparse: int) -> int:
    """HF Switch's ``{encoder,decoder}_sparse_step`` (``num_sparse = 0`` gives ``num_layers``)."""
    return num_layers // num_sparse if num_sparse > 0 else num_layers


def hf_sparse_blocks(num_layers: int, num_sparse: int) -> list[int]:
    """Blocks HF Switch makes sparse in a stack of ``num_layers`` with ``num_sparse`` sparse layers
    (``num_sparse = 0`` still makes block 1 sparse: HF's own edge case)."""
    step = hf_sparse_step(num_layers, num_sparse)
    return [i for i in range(num_layers) if step > 0 and (i % step == 1 or step == 1)]


def _hf_scales_output(hf: Mapping[str, Any]) -> bool:
    """Whether HF multiplies the decoder output by ``d_model**-0.5`` before the LM head."""
    if hf.get("model_type") == T5 and "scale_decoder_outputs" in hf:  # written by transformers 5
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", True) is not False


def config_from_hf(hf: Mapping[str, Any]) -> ModelConfig:
    """Our ``ModelConfig`` for an HF ``config.json`` dict (``model_type`` t5 or switch_transformers).

    ``tie_embeddings`` is True when HF scales the decoder output (see the module docstring);
    ``load_hf`` unties it when the checkpoint's head differs from its embedding.
    """
    model_type = hf.get("model_type")
    if model_type not in (T5, SWITCH):
        raise ValueError(f"model_type: {model_type!r} is not supported (one of {T5!r}, {SWITCH!r})")
    for key in ("pad_token_id", "decoder_start_token_id"):
        if hf.get(key) not in (None, 0):
            raise ValueError(f"{key}: {hf[key]} is not supported (flanmoe uses pad = decoder start = 0)")
    missing = [k for k in ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv", "num_layers") if k not in hf]
    if missing:  # their defaults differ between T5Config and SwitchTransformersConfig
        raise ValueError(f"{missing[0]}: missing from the HF config (shapes must be given: {missing})")
    n_enc = hf["num_layers"]
    n_dec = hf.get("num_decoder_layers") or n_enc
    fields: dict[str, Any] = dict(
        preset=None,
        vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        d_ff=hf["d_ff"],
        num_heads=hf["num_heads"],
        d_kv=hf["d_kv"],
        num_encoder_layers=n_enc,
        num_decoder_layers=n_dec,
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout_rate=hf.get("dropout_rate", 0.1),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        init_std=hf.get("initializer_factor", 1.0),
        tie_embeddings=_hf_scales_output(hf),
    )
    if model_type == T5:
        proj = hf.get("feed_forward_proj", "relu")
        ffn = {"relu": "relu", "gated-gelu": "gated_gelu"}.get(proj)
        if ffn is None:
            raise ValueError(f"feed_forward_proj: {proj!r} is not supported (relu or gated-gelu)")
        return ModelConfig(**fields, ffn=ffn)
    act = hf.get("dense_act_fn", "relu")
    if act != "relu":
        raise ValueError(f"dense_act_fn: {act!r} is not supported for Switch (relu)")
    if hf.get("router_bias", False):
        raise ValueError("router_bias: true is not supported (flanmoe routers have no bias)")
    return ModelConfig(**fields, ffn="relu", moe=_moe_from_hf(hf, n_enc, n_dec))


def _moe_from_hf(hf: Mapping[str, Any], n_enc: int, n_dec: int) -> MoEConfig:
    enc = hf_sparse_blocks(n_enc, hf.get("num_sparse_encoder_layers", 3))
    dec = hf_sparse_blocks(n_dec, hf.get("num_sparse_decoder_layers", 3))
    step = hf_sparse_step(n_enc, hf.get("num_sparse_encoder_layers", 3))
    moe = dict(
        num_experts=hf.get("num_experts", 8),
        router="switch",
        expert_capacity=hf.get("expert_capacity", 64),
        router_jitter=hf.get("router_jitter_noise", 0.01),
        router_fp32=hf.get("router_dtype", "float32") == "float32",
        load_balance_coef=hf.get("router_aux_loss_coef", 0.001),
        z_loss_coef=hf.get("router_z_loss_coef", 0.001),
    )
    if step >= 1:
        cfg = MoEConfig(**moe, moe_every=step, moe_offset=1 % step)
        ours_enc = [i for i in range(n_enc) if cfg.is_moe_block(i)]
        ours_dec = [i for i in range(n_dec) if cfg.is_moe_block(i)]
        if ours_enc == enc and ours_dec == dec:
            return cfg
    raise ValueError(
        f"num_sparse_decoder_layers: HF sparse blocks encoder {enc}, decoder {dec} cannot be expressed "
        "by one moe_every/moe_offset for both stacks"
    )


def config_to_hf(cfg: ModelConfig, vocab_size: int, expert_capacity: int | None = None) -> dict[str, Any]:
    """The HF ``config.json`` dict for ``cfg``; ``ValueError`` naming the setting HF cannot express.

    ``expert_capacity`` (Switch only) is required unless ``cfg.moe.expert_capacity`` is set: HF has no
    capacity factor and no dropless mode, only a fixed number of slots per expert and sequence.
    """
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_ff=cfg.d_ff,
        d_kv=cfg.d_kv,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        dropout_rate=cfg.dropout_rate,
        layer_norm_epsilon=cfg.layer_norm_eps,
        initializer_factor=cfg.init_std,
        tie_word_embeddings=cfg.tie_embeddings,
        is_encoder_decoder=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    if cfg.moe is None:
        proj = {"relu": "relu", "gated_gelu": "gated-gelu"}[cfg.ffn]
        return dict(architectures=[ARCHITECTURES[T5]], model_type=T5, feed_forward_proj=proj, **common)
    moe = cfg.moe
    for stack in ("encoder", "decoder"):
        router = moe.router_for(stack)
        if router != "switch" and not (router == "top_k" and moe.top_k == 1):
            setting = "router" if stack == "encoder" else "decoder_router"
            raise ValueError(
                f"{setting}: {router!r} ({stack}) cannot be exported: HF Switch only has a top-1 router"
            )
    if cfg.ffn != "relu":
        raise ValueError(f"ffn: {cfg.ffn!r} experts cannot be exported: HF Switch experts are ReLU (wi, wo)")
    sparse = {}
    for name, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        ours = [i for i in range(n) if moe.is_moe_block(i)]
        counts = [k for k in (*range(1, n + 1), 0) if hf_sparse_blocks(n, k) == ours]
        if not counts:
            raise ValueError(
                f"moe_every: MoE blocks {ours} of the {name} (moe_every {moe.moe_every}, moe_offset "
                f"{moe.moe_offset}) cannot be expressed by HF Switch (sparse when i % step == 1)"
            )
        sparse[name] = counts[0]
    capacity = expert_capacity if expert_capacity is not None else moe.expert_capacity
    if capacity is None:
        raise ValueError(
            "expert_capacity: HF Switch has a fixed capacity per expert and sequence, no capacity factor "
            "or dropless mode; pass expert_capacity= to export"
        )
    return dict(
        architectures=[ARCHITECTURES[SWITCH]],
        model_type=SWITCH,
        dense_act_fn="relu",
        num_experts=moe.num_experts,
        num_sparse_encoder_layers=sparse["encoder"],
        num_sparse_decoder_layers=sparse["decoder"],
        expert_capacity=capacity,
        router_bias=False,
        router_jitter_noise=moe.router_jitter,
        router_dtype="float32",
        router_z_loss_coef=moe.resolved_z_loss_coef,
        router_aux_loss_coef=moe.load_balance_coef,
        **common,
    )


# ----------------------------------------------------------------------------- weights


def _linear_pairs(cfg: ModelConfig, hf_type: str) -> Iterator[tuple[str, str]]:
    """(our key, HF key) of every tensor copied as is (``nn.Linear``, norms, embeddings)."""
    yield "embed.weight", "shared.weight"
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        dec = stack == "decoder"
        yield (
            f"{stack}.position_bias.embedding.weight",
            (f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        )
        yield f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight"
        for i in range(n):
            ours, hf = f"{stack}.blocks.{i}", f"{stack}.block.{i}.layer"
            yield f"{ours}.self_norm.weight", f"{hf}.0.layer_norm.weight"
            for p in "qkvo":
                yield f"{ours}.self_attn.{p}.weight", f"{hf}.0.SelfAttention.{p}.weight"
            if dec:
                yield f"{ours}.cross_norm.weight", f"{hf}.1.layer_norm.weight"
                for p in "qkvo":
                    yield f"{ours}.cross_attn.{p}.weight", f"{hf}.1.EncDecAttention.{p}.weight"
            f = 2 if dec else 1
            yield f"{ours}.ffn_norm.weight", f"{hf}.{f}.layer_norm.weight"
            if cfg.moe is not None and cfg.moe.is_moe_block(i):
                yield f"{ours}.ffn.router.gate.weight", f"{hf}.{f}.mlp.router.classifier.weight"
                continue
            ffn = f"{hf}.{f}.DenseReluDense" if hf_type == T5 else f"{hf}.{f}.mlp"
            names = ("wi_0", "wi_1", "wo") if cfg.ffn == "gated_gelu" else ("wi", "wo")
            for w in names:
                yield f"{ours}.ffn.{w}.weight", f"{ffn}.{w}.weight"


def _expert_layers(cfg: ModelConfig) -> Iterator[tuple[str, str]]:
    """(our experts prefix, HF experts prefix) of every MoE block."""
    if cfg.moe is None:
        return
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        f = 2 if stack == "decoder" else 1
        for i in range(n):
            if cfg.moe.is_moe_block(i):
                yield f"{stack}.blocks.{i}.ffn.experts", f"{stack}.block.{i}.layer.{f}.mlp.experts"


def state_dict_from_hf(
    tensors: Mapping[str, Tensor], cfg: ModelConfig, scale_output: bool
) -> dict[str, Tensor]:
    """Our state dict for ``cfg`` from HF ``tensors``; ``scale_output``: HF scales the decoder output
    by ``d_model**-0.5`` (folded into an untied head). Strict: a missing or unused HF key raises."""
    hf_type = SWITCH if cfg.moe is not None else T5
    tensors = dict(tensors)
    if "shared.weight" not in tensors and "encoder.embed_tokens.weight" in tensors:
        tensors["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    for copy in _TIED_COPIES:  # HF unties these too when tie_word_embeddings is false
        if copy in tensors and not torch.equal(tensors[copy], tensors["shared.weight"]):
            raise ValueError(f"HF checkpoint: {copy} differs from shared.weight (flanmoe has one embedding)")
    used = set(_TIED_COPIES)
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        if key not in tensors:
            raise ValueError(f"HF checkpoint: missing {key}")
        used.add(key)
        return tensors[key]

    for ours, hf in _linear_pairs(cfg, hf_type):
        out[ours] = take(hf)
    for ours, hf in _expert_layers(cfg):
        E = cfg.moe.num_experts  # type: ignore[union-attr]
        # nn.Linear weights are [out, in]; our stacked experts compute x @ W[e] with W[e] [in, out]
        out[f"{ours}.wi"] = torch.stack([take(f"{hf}.expert_{e}.wi.weight").t() for e in range(E)])
        out[f"{ours}.wo"] = torch.stack([take(f"{hf}.expert_{e}.wo.weight").t() for e in range(E)])
    if not cfg.tie_embeddings:
        # a copy, never the embedding itself: an untied head shares no storage with it (training, export)
        head = tensors["lm_head.weight"] if "lm_head.weight" in tensors else tensors["shared.weight"].clone()
        out["lm_head.weight"] = head * cfg.d_model**-0.5 if scale_output else head
    used.add("lm_head.weight")
    unused = sorted(tensors.keys() - used)
    if unused:
        raise ValueError(f"HF checkpoint: keys flanmoe does not use: {unused}")
    return {k: v.contiguous() for k, v in out.items()}


def state_dict_to_hf(state_dict: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """HF tensors (``model.safetensors`` keys) from our state dict for ``cfg``."""
    hf_type = SWITCH if cfg.moe is not None else T5
    out = {hf: state_dict[ours] for ours, hf in _linear_pairs(cfg, hf_type)}
    for ours, hf in _expert_layers(cfg):
        for e in range(cfg.moe.num_experts):  # type: ignore[union-attr]
            out[f"{hf}.expert_{e}.wi.weight"] = state_dict[f"{ours}.wi"][e].t()
            out[f"{hf}.expert_{e}.wo.weight"] = state_dict[f"{ours}.wo"][e].t()
    for copy in _TIED_COPIES:  # transformers 5 leaves them untied (random) in an untied Switch model
        out[copy] = state_dict["embed.weight"].clone()
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state_dict["lm_head.weight"]
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------- files


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an HF model directory."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (not a Hugging Face model directory?)")
    return json.loads(file.read_text())


def read_hf_tensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of an HF model directory: ``model.safetensors``, ``pytorch_model.bin`` or their
    sharded forms (``*.index.json``)."""
    from safetensors.torch import load_file

    d = Path(path)

    def load(file: Path) -> dict[str, Tensor]:
        if file.suffix == ".safetensors":
            return load_file(str(file), device="cpu")
        return torch.load(file, map_location="cpu", weights_only=True)

    for name in (SAFETENSORS_FILE, BIN_FILE):
        if (d / name).is_file():
            return load(d / name)
        index = d / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            tensors: dict[str, Tensor] = {}
            for shard in shards:
                tensors.update(load(d / shard))
            return tensors
    raise FileNotFoundError(f"{d}: no {SAFETENSORS_FILE} or {BIN_FILE} (or their .index.json)")


HUB_PATTERNS = ["config.json", "*.safetensors", "*.bin", "*.index.json", "tokenizer*.json", "spiece.model"]


def resolve_hf_path(name: str) -> Path:
    """The directory of checkpoint ``name``: a local directory, or hub id ``name``'s snapshot in the
    Hugging Face cache; downloaded (weights, config, tokenizer files) only when the hub is not offline.

    Raises ``FileNotFoundError`` naming ``name``: a path that is no directory, or a hub id not in the
    cache while ``HF_HUB_OFFLINE`` is set (the project's default, as for data sources).
    """
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if local.is_absolute() or name.startswith((".", "~")) or local.exists() or name.count("/") > 1:
        raise FileNotFoundError(
            f"{name}: no such directory (a local path or a hub id like google/switch-base-8)"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except HFValidationError as e:
        raise FileNotFoundError(f"{name}: not a local directory, nor a valid hub id ({e})") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"{name}: not a local directory, and not in the Hugging Face cache; the hub is offline "
                "(HF_HUB_OFFLINE=1, the project's default): download it once with HF_HUB_OFFLINE=0, or give "
                "a local directory"
            ) from None
    return Path(snapshot_download(name, allow_patterns=HUB_PATTERNS))


def load_hf(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    moe_overrides: Mapping[str, Any] | None = None,
) -> FlanMoEModel:
    """A ``FlanMoEModel`` from an HF T5 / Switch checkpoint directory (training mode, like
    ``FlanMoEModel.from_pretrained``); ``moe_overrides`` replace routing fields (e.g. ``{"dropless": True}``)."""
    hf = read_hf_config(path)
    tensors = read_hf_tensors(path)
    cfg = config_from_hf(hf)
    scale = _hf_scales_output(hf)
    head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
    if cfg.tie_embeddings and head is not None and shared is not None and not torch.equal(head, shared):
        cfg = cfg.model_copy(update={"tie_embeddings": False})  # HF keeps a distinct head: fold the scale
    if moe_overrides and cfg.moe is not None:
        moe = MoEConfig.model_validate({**cfg.moe.model_dump(), **moe_overrides})
        cfg = cfg.model_copy(update={"moe": moe})
    state = state_dict_from_hf(tensors, cfg, scale_output=scale and not cfg.tie_embeddings)
    with torch.device("meta"):
        model = FlanMoEModel(cfg, cfg.vocab_size)  # type: ignore[arg-type]
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def save_hf(model: FlanMoEModel, path: str | Path, expert_capacity: int | None = None) -> Path:
    """Write ``model`` as an HF directory (``config.json``, ``model.safetensors``) that
    ``transformers`` loads with ``AutoModelForSeq2SeqLM``; see ``config_to_hf`` for what is refused."""
    from safetensors.torch import save_file

    base = getattr(model, "_orig_mod", model)
    config = config_to_hf(base.cfg, base.vocab_size, expert_capacity)
    tensors = state_dict_to_hf(base.state_dict(), base.cfg)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    return out
