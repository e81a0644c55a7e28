"""T5.1.1-style encoder-decoder with MoE FFNs in every ``moe_every``-th block.

Conventions: pad = 0 (also the decoder start token), eos = 1. ``labels`` equal to -100 or pad are
ignored by the loss. ``Seq2SeqOutput.loss = lm_loss + aux_loss`` is what training backpropagates.

Everything a block or a stack computes comes back as a value (``BlockOutput``, ``StackOutput``:
named tuples, which FSDP and autograd hooks traverse): the hidden states, the MoE layers' aux losses
and router statistics, and the attention keys/values a KV cache keeps. The cache itself belongs to
generation (``generate.KVCache``): a stack takes the past keys/values as plain arguments.

Generation (``generate.greedy_generate``, ``generate.KVCache``), export and loading
(``pretrained.save_pretrained`` / ``load_pretrained``) and the Hugging Face format (``hf``) are built
on this module, which imports none of them: the package's imports go one way (config -> init, layers,
router, experts -> moe -> transformer -> generate, pretrained -> hf).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.config import ModelConfig
from flanmoe.model.init import (
    init_attention_,
    init_by_d_model_,
    init_embedding_,
    init_experts_,
    init_ffn_,
    init_norm_,
)
from flanmoe.model.layers import FFN, Attention, RelativePositionBias, RMSNorm, embedding, padding_bias
from flanmoe.model.loss import IGNORE_INDEX, token_cross_entropy
from flanmoe.model.moe import MoEAux, MoELayer
from flanmoe.model.router import RouterStats

PAD_ID, EOS_ID = 0, 1

KV = tuple[Tensor, Tensor]  # keys, values [B, H, S, d_kv]


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


class BlockOutput(NamedTuple):
    """What a block returns: its output, its MoE aux (None for a dense FFN), and the keys/values of
    its self-attention (past ones first) and of its cross-attention (None in the encoder)."""

    hidden: Tensor  # [B, S, d_model]
    aux: MoEAux | None
    self_kv: KV
    cross_kv: KV | None


class StackOutput(NamedTuple):
    """What a stack returns: the final-norm output, each MoE layer's aux by layer name
    (``"encoder.1"``, in order), and (cached decoding) every block's self- and cross-attention keys/values."""

    hidden: Tensor  # [B, S, d_model]
    aux: dict[str, MoEAux]
    self_kv: tuple[KV, ...]
    cross_kv: tuple[KV | None, ...]


class DecoderOutput(NamedTuple):
    """``StackOutput`` of the decoder with the LM head applied: logits instead of hidden states."""

    logits: Tensor  # [B, T, vocab]
    aux: dict[str, MoEAux]
    self_kv: tuple[KV, ...]
    cross_kv: tuple[KV | None, ...]


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
        cross: Tensor | KV | None = None,
        cross_bias: Tensor | None = None,
        past_kv: KV | None = None,
    ) -> BlockOutput:
        """``x`` ``[B, S, d]``; ``cross`` is the encoder output ``[B, S_enc, d]`` or its projected K/V;
        ``past_kv`` the self-attention K/V of earlier positions (cached decoding)."""
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
        return BlockOutput(x + self.dropout(h), aux, (k, v), cross)


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
        enc_out: Tensor | None = None,
        enc_mask: Tensor | None = None,
        past_kv: Sequence[KV | None] | None = None,
        cross_kv: Sequence[KV | None] | None = None,
        offset: int = 0,
    ) -> StackOutput:
        """``x`` embedded tokens ``[B, S, d]`` -> ``StackOutput`` (hidden ``[B, S, d]``).

        Encoder: ``token_mask`` ``[B, S]`` masks padded keys and unroutes padding. Decoder: causal,
        cross-attends to ``enc_out`` ``[B, S_enc, d]`` (padded keys from ``enc_mask``), or to the
        per-block projected ``cross_kv`` where given. Cached decoding: ``past_kv`` holds each block's
        earlier keys/values (or None), ``x`` the positions from ``offset`` on, and the output carries
        every block's keys/values; without ``past_kv`` its ``self_kv``/``cross_kv`` are empty (nothing
        held beyond what autograd keeps: activation checkpointing frees them block by block).
        """
        S = x.shape[1]
        bias = self.position_bias(S, offset + S, offset)  # [1, H, S, offset+S]
        if not self.is_decoder and token_mask is not None:
            bias = bias + padding_bias(token_mask, bias.dtype)
        cross_bias = padding_bias(enc_mask, bias.dtype) if enc_mask is not None else None
        name = "decoder" if self.is_decoder else "encoder"
        aux: dict[str, MoEAux] = {}
        self_kv: list[KV] = []
        cross_out: list[KV | None] = []
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            cross = past = None
            if self.is_decoder:
                cached = cross_kv[i] if cross_kv is not None else None
                cross = cached if cached is not None else enc_out
                past = past_kv[i] if past_kv is not None else None
            x, layer_aux, kv, cross = block(x, bias, token_mask, cross, cross_bias, past)
            if past_kv is not None:
                self_kv.append(kv)
                cross_out.append(cross)
            if layer_aux is not None:
                aux[f"{name}.{i}"] = layer_aux
        return StackOutput(self.dropout(self.final_norm(x)), aux, tuple(self_kv), tuple(cross_out))


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
        """T5 init (``init.py``), scaled by ``cfg.init_std``, module by module in a fixed order."""
        f, d = self.cfg.init_std, self.cfg.d_model
        init_embedding_(self.embed.weight, f)
        if self.lm_head is not None:
            init_by_d_model_(self.lm_head.weight, f, d)
        for m in self.modules():
            if isinstance(m, Attention):
                init_attention_(m, f)
            elif isinstance(m, FFN):
                init_ffn_(m, f)
            elif isinstance(m, RelativePositionBias):
                init_by_d_model_(m.embedding.weight, f, d)
            elif isinstance(m, RMSNorm):
                init_norm_(m.weight)
            elif isinstance(m, MoELayer):
                init_experts_(m.experts, f)
                init_by_d_model_(m.router.gate.weight, f, d)

    def run_encoder(self, input_ids: Tensor, attention_mask: Tensor | None) -> StackOutput:
        """``input_ids`` ``[B, S]`` -> the encoder's ``StackOutput`` (hidden ``[B, S, d_model]``, MoE aux)."""
        return self.encoder(self.embed(input_ids), attention_mask)

    def run_decoder(
        self,
        decoder_input_ids: Tensor,
        enc_out: Tensor,
        enc_mask: Tensor | None,
        decoder_mask: Tensor | None = None,
        past_kv: Sequence[KV | None] | None = None,
        cross_kv: Sequence[KV | None] | None = None,
        offset: int = 0,
    ) -> DecoderOutput:
        """Decoder tokens ``[B, T]`` (positions ``offset..``, after ``past_kv``) -> ``DecoderOutput``
        (logits ``[B, T, vocab]``, MoE aux, this call's keys/values for a cache)."""
        out = self.decoder(
            self.embed(decoder_input_ids), decoder_mask, enc_out, enc_mask, past_kv, cross_kv, offset
        )
        if self.lm_head is None:  # tied: T5 rescales before the shared projection
            logits = F.linear(out.hidden * self.cfg.d_model**-0.5, self.embed.weight)
        else:
            logits = self.lm_head(out.hidden)
        return DecoderOutput(logits, out.aux, out.self_kv, out.cross_kv)

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
        enc = self.run_encoder(input_ids, attention_mask)
        dec = self.run_decoder(decoder_input_ids, enc.hidden, attention_mask, decoder_attention_mask)
        logits, aux = dec.logits, [*enc.aux.values(), *dec.aux.values()]
        out = Seq2SeqOutput(
            logits=logits, router_stats={n: a.stats for n, a in (*enc.aux.items(), *dec.aux.items())}
        )
        zero = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
        out.aux_loss = sum((a.loss for a in aux), zero)
        if aux:
            out.load_balance_loss = torch.stack([a.load_balance_loss for a in aux]).mean()
            out.z_loss = torch.stack([a.z_loss for a in aux]).mean()
        if labels is not None:
            targets = labels.masked_fill(labels == PAD_ID, IGNORE_INDEX)
            out.lm_loss = token_cross_entropy(logits, targets)
            out.loss = out.lm_loss + out.aux_loss
        return out

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
