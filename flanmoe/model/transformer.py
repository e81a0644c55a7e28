"""T5.1.1-style encoder-decoder with MoE FFNs in every ``moe_every``-th block.

Conventions: pad = 0 (also the decoder start token), eos = 1. ``labels`` equal to -100 or pad are
ignored by the loss. ``Seq2SeqOutput.loss = lm_loss + aux_loss`` is what training backpropagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.config import ModelConfig
from flanmoe.model.layers import (
    FFN,
    Attention,
    RelativePositionBias,
    RMSNorm,
    embedding,
    init_normal_,
    padding_bias,
)
from flanmoe.model.loss import IGNORE_INDEX, token_cross_entropy
from flanmoe.model.moe import MoEAux, MoELayer
from flanmoe.model.router import RouterStats

PAD_ID, EOS_ID = 0, 1


@dataclass
class Seq2SeqOutput:
    """Model output. ``router_stats`` maps ``"encoder.3"``-style layer names to their stats (device
    tensors; ``reduce_router_stats`` / ``RouterStatsAccumulator`` turn them into log floats)."""

    logits: Tensor  # [B, T, vocab]
    loss: Tensor | None = None  # lm_loss + aux_loss (None without labels)
    lm_loss: Tensor | None = None  # token-mean cross-entropy over non-ignored labels
    aux_loss: Tensor | None = None  # sum over MoE layers of their weighted aux losses (0 if dense)
    load_balance_loss: Tensor | None = None  # unweighted, mean over MoE layers
    z_loss: Tensor | None = None  # unweighted, mean over MoE layers
    router_stats: dict[str, RouterStats] = field(default_factory=dict)


@dataclass
class KVCache:
    """Per decoder layer: self-attention keys/values ``[B, H, t, d_kv]`` grown each step, and the
    cross-attention keys/values of the encoder output, computed once."""

    self_kv: list[tuple[Tensor, Tensor] | None]
    cross_kv: list[tuple[Tensor, Tensor] | None]
    length: int = 0  # decoder positions already in the cache


class Block(nn.Module):
    """Pre-norm block: self-attention, (decoder) cross-attention, FFN or MoE; residual around each."""

    def __init__(self, cfg: ModelConfig, is_decoder: bool, moe: MoELayer | None):
        super().__init__()
        d = cfg.d_model
        self.self_norm = RMSNorm(d, cfg.layer_norm_eps)
        self.self_attn = Attention(d, cfg.num_heads, cfg.d_kv, cfg.dropout_rate)
        if is_decoder:
            self.cross_norm = RMSNorm(d, cfg.layer_norm_eps)
            self.cross_attn = Attention(d, cfg.num_heads, cfg.d_kv, cfg.dropout_rate)
        self.ffn_norm = RMSNorm(d, cfg.layer_norm_eps)
        self.ffn = moe if moe is not None else FFN(d, cfg.d_ff, cfg.dropout_rate, cfg.ffn)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    @property
    def is_moe(self) -> bool:
        return isinstance(self.ffn, MoELayer)

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor,
        token_mask: Tensor | None,
        cross: Tensor | tuple[Tensor, Tensor] | None = None,
        cross_bias: Tensor | None = None,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, MoEAux | None, tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
        """``x`` ``[B, S, d]``; ``cross`` is the encoder output ``[B, S_enc, d]`` or its cached K/V.
        Returns new ``x``, the MoE aux (or None), this step's self K/V (concatenated to ``past_kv``)
        and the cross K/V, for a cache."""
        if isinstance(cross, Tensor):  # projected here, inside the block: one FSDP unit owns its weights
            cross = self.cross_attn.project_kv(cross)
        h = self.self_norm(x)
        k, v = self.self_attn.project_kv(h)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        x = x + self.dropout(self.self_attn(h, k, v, self_bias))
        if cross is not None:
            x = x + self.dropout(self.cross_attn(self.cross_norm(x), cross[0], cross[1], cross_bias))
        h = self.ffn_norm(x)
        aux = None
        if self.is_moe:
            h, aux = self.ffn(h, token_mask)
        else:
            h = self.ffn(h)
        return x + self.dropout(h), aux, (k, v), cross


class Stack(nn.Module):
    """Encoder or decoder: blocks, one relative position bias shared by all of them, final norm."""

    def __init__(self, cfg: ModelConfig, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        n = cfg.num_decoder_layers if is_decoder else cfg.num_encoder_layers
        moe_cfg = cfg.moe
        blocks = []
        for i in range(n):
            moe = None
            if moe_cfg is not None and moe_cfg.is_moe_block(i):
                router = moe_cfg.router_for("decoder" if is_decoder else "encoder")
                moe = MoELayer.from_config(moe_cfg, router, cfg.d_model, cfg.d_ff, cfg.init_std, ffn=cfg.ffn)
            blocks.append(Block(cfg, is_decoder, moe))
        self.blocks = nn.ModuleList(blocks)
        self.position_bias = RelativePositionBias(
            cfg.num_heads,
            not is_decoder,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(
        self,
        x: Tensor,
        token_mask: Tensor | None,
        aux: list[tuple[str, MoEAux]],
        enc_out: Tensor | None = None,
        enc_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``x`` embedded tokens ``[B, S, d]`` -> ``[B, S, d]``; appends MoE aux outputs to ``aux``.

        Encoder: ``token_mask`` ``[B, S]`` masks padded keys and unroutes padding. Decoder: causal,
        cross-attends to ``enc_out`` ``[B, S_enc, d]`` (padded keys from ``enc_mask``), and with a
        ``cache`` treats ``x`` as the positions after ``cache.length``.
        """
        S = x.shape[1]
        offset = cache.length if cache is not None else 0
        bias = self.position_bias(S, offset + S, offset)  # [1, H, S, offset+S]
        if not self.is_decoder and token_mask is not None:
            bias = bias + padding_bias(token_mask, bias.dtype)
        cross_bias = padding_bias(enc_mask, bias.dtype) if enc_mask is not None else None
        name = "decoder" if self.is_decoder else "encoder"
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            cross = past = None
            if self.is_decoder:
                cached = cache.cross_kv[i] if cache is not None else None
                cross = cached if cached is not None else enc_out
                past = cache.self_kv[i] if cache is not None else None
            x, layer_aux, kv, cross = block(x, bias, token_mask, cross, cross_bias, past)
            if cache is not None:
                cache.self_kv[i], cache.cross_kv[i] = kv, cross
            if layer_aux is not None:
                aux.append((f"{name}.{i}", layer_aux))
        if cache is not None:
            cache.length += S
        return self.dropout(self.final_norm(x))


def shift_right(labels: Tensor, start_id: int = PAD_ID) -> Tensor:
    """Decoder inputs from ``labels`` ``[B, T]``: start token first, ignored labels become pad."""
    dec = labels.new_full(labels.shape, start_id)
    dec[:, 1:] = labels[:, :-1]
    return dec.masked_fill(dec == IGNORE_INDEX, PAD_ID)


class FlanMoEModel(nn.Module):
    """Encoder-decoder LM: ``model(input_ids, attention_mask, labels=...)`` -> ``Seq2SeqOutput``."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = embedding(vocab_size, cfg.d_model)
        self.encoder = Stack(cfg, is_decoder=False)
        self.decoder = Stack(cfg, is_decoder=True)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """T5 init, scaled by ``cfg.init_std``; relative bias and untied head ~ N(0, 1/sqrt(d_model))."""
        f, d = self.cfg.init_std, self.cfg.d_model
        init_normal_(self.embed.weight, std=f)
        if self.lm_head is not None:
            init_normal_(self.lm_head.weight, std=f * d**-0.5)
        for m in self.modules():
            if isinstance(m, Attention | FFN):
                m.reset_parameters(f)
            elif isinstance(m, RelativePositionBias):
                init_normal_(m.embedding.weight, std=f * d**-0.5)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif isinstance(m, MoELayer):
                m.experts.reset_parameters(f)
                init_normal_(m.router.gate.weight, std=f * d**-0.5)

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None, aux: list[tuple[str, MoEAux]] | None = None
    ) -> Tensor:
        """``input_ids`` ``[B, S]`` -> encoder output ``[B, S, d_model]``."""
        return self.encoder(self.embed(input_ids), attention_mask, aux if aux is not None else [])

    def decode(
        self,
        decoder_input_ids: Tensor,
        enc_out: Tensor,
        enc_mask: Tensor | None,
        aux: list[tuple[str, MoEAux]] | None = None,
        decoder_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Decoder tokens ``[B, T]`` (after ``cache.length`` if cached) -> logits ``[B, T, vocab]``."""
        aux = aux if aux is not None else []
        h = self.decoder(self.embed(decoder_input_ids), decoder_mask, aux, enc_out, enc_mask, cache)
        if self.lm_head is None:  # tied: T5 rescales before the shared projection
            return F.linear(h * self.cfg.d_model**-0.5, self.embed.weight)
        return self.lm_head(h)

    def new_cache(self) -> KVCache:
        n = len(self.decoder.blocks)
        return KVCache([None] * n, [None] * n)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        labels: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """``input_ids``/``attention_mask`` ``[B, S]``; ``labels`` ``[B, T]`` (-100 or pad = ignored)
        give the loss and, shifted right, the decoder inputs unless ``decoder_input_ids`` is given.
        ``decoder_attention_mask`` ``[B, T]`` only excludes decoder padding from MoE routing (the
        decoder is causal); without it, it is taken from ``labels``."""
        if attention_mask is None:
            attention_mask = input_ids != PAD_ID
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            decoder_input_ids = shift_right(labels)
        if decoder_attention_mask is None and labels is not None:
            decoder_attention_mask = (labels != IGNORE_INDEX) & (labels != PAD_ID)
        aux: list[tuple[str, MoEAux]] = []
        enc = self.encode(input_ids, attention_mask, aux)
        logits = self.decode(decoder_input_ids, enc, attention_mask, aux, decoder_attention_mask)
        out = Seq2SeqOutput(logits=logits, router_stats={name: a.stats for name, a in aux})
        zero = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
        out.aux_loss = sum((a.loss for _, a in aux), zero)
        if aux:
            out.load_balance_loss = torch.stack([a.load_balance_loss for _, a in aux]).mean()
            out.z_loss = torch.stack([a.z_loss for _, a in aux]).mean()
        if labels is not None:
            targets = labels.masked_fill(labels == PAD_ID, IGNORE_INDEX)
            out.lm_loss = token_cross_entropy(logits, targets)
            out.loss = out.lm_loss + out.aux_loss
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        max_new_tokens: int = 32,
        eos_id: int = EOS_ID,
        use_cache: bool = True,
        aux: list[tuple[str, MoEAux]] | None = None,
    ) -> Tensor:
        """Greedy decoding: ``[B, S]`` -> generated ids ``[B, <= max_new_tokens]`` (no start token;
        after a sequence's eos, pad). Stops early once every sequence has produced eos. Call
        ``model.eval()`` first (dropout, eval capacity factor). ``aux`` collects the MoE outputs."""
        from flanmoe.model.generate import greedy_generate

        return greedy_generate(self, input_ids, attention_mask, max_new_tokens, eos_id, use_cache, aux=aux)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        moe_overrides: dict | None = None,
    ) -> FlanMoEModel:
        """Load a directory written by ``save_pretrained`` (strict: every key, every shape);
        ``moe_overrides`` change routing settings that hold no weights (e.g. ``{"dropless": True}``)."""
        from flanmoe.model.pretrained import load_pretrained

        return load_pretrained(path, device, dtype, moe_overrides)

    def save_pretrained(self, path: str | Path, tokenizer_path: str | Path | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (and ``tokenizer.json``) to ``path``."""
        from flanmoe.model.pretrained import save_pretrained

        return save_pretrained(self, path, tokenizer_path)

    def param_group(self, name: str) -> str:
        """``"router"``, ``"experts"`` or ``"dense"`` for a parameter name (for freezing ablations)."""
        if ".router." in name:
            return "router"
        if ".experts." in name:
            return "experts"
        return "dense"


def build_model(cfg: ModelConfig, vocab_size: int | None = None) -> FlanMoEModel:
    """The model of ``cfg``; ``vocab_size`` (from the tokenizer) overrides ``cfg.vocab_size``."""
    vocab = vocab_size if vocab_size is not None else cfg.vocab_size
    if vocab is None:
        raise ValueError("vocab_size: not set in the config and not given to build_model")
    return FlanMoEModel(cfg, vocab)
