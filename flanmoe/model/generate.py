"""Greedy decoding, with a KV cache (one decoder position per step) or without (re-run the decoder
on the whole prefix each step, the reference the cached path must match).

With token-choice capacity in the decoder, the two paths see different routing groups (B tokens
per step vs. the whole prefix), so they agree only when no token is dropped: dropless, or capacity
large enough (eval capacity factor with ``min_capacity``). Expert-choice is never in the decoder.
Positions after a sequence's eos are masked out of routing (they neither take expert capacity nor
count in router statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from flanmoe.model.moe import MoEAux
    from flanmoe.model.transformer import DecoderOutput, FlanMoEModel


@dataclass
class KVCache:
    """Per decoder layer: self-attention keys/values ``[B, H, t, d_kv]`` grown each step, and the
    cross-attention keys/values of the encoder output, computed once (or set by the caller)."""

    self_kv: list[tuple[Tensor, Tensor] | None]
    cross_kv: list[tuple[Tensor, Tensor] | None]
    length: int = 0  # decoder positions already in the cache

    @classmethod
    def empty(cls, num_layers: int) -> KVCache:
        """A cache for a decoder of ``num_layers`` blocks, holding nothing yet."""
        return cls([None] * num_layers, [None] * num_layers)

    @classmethod
    def for_model(cls, model: FlanMoEModel) -> KVCache:
        """An empty cache for ``model``'s decoder."""
        return cls.empty(len(model.decoder.blocks))

    def decode(
        self,
        model: FlanMoEModel,
        decoder_input_ids: Tensor,
        enc_out: Tensor,
        enc_mask: Tensor | None,
        decoder_mask: Tensor | None = None,
    ) -> DecoderOutput:
        """Run ``model``'s decoder on the positions after ``length`` (``[B, T]``) and keep their keys/values."""
        out = model.run_decoder(
            decoder_input_ids, enc_out, enc_mask, decoder_mask, self.self_kv, self.cross_kv, self.length
        )
        self.self_kv, self.cross_kv = list(out.self_kv), list(out.cross_kv)
        self.length += decoder_input_ids.shape[1]
        return out


@torch.no_grad()
def greedy_generate(
    model: FlanMoEModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 32,
    eos_id: int = 1,
    use_cache: bool = True,
    start_id: int = 0,
    pad_id: int = 0,
    aux: list[tuple[str, MoEAux]] | None = None,
) -> Tensor:
    """Greedy ids ``[B, <= max_new_tokens]`` for ``input_ids`` ``[B, S]``; pad after a sequence's eos.

    ``aux``, if given, collects every MoE layer's ``(name, MoEAux)`` (router stats) of the encoder pass
    and of each decoding step.
    """
    if attention_mask is None:
        attention_mask = input_ids != pad_id
    B = input_ids.shape[0]
    encoded = model.run_encoder(input_ids, attention_mask)
    if aux is not None:
        aux.extend(encoded.aux.items())
    enc = encoded.hidden
    dec = torch.full((B, 1), start_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    alive = [~done]  # per decoder position: the sequence had not ended before it
    cache = KVCache.for_model(model) if use_cache else None
    out = []
    for _ in range(max_new_tokens):
        if cache is not None:  # one new position per step
            step = cache.decode(model, dec[:, -1:], enc, attention_mask, alive[-1][:, None])
        else:  # the whole prefix again
            step = model.run_decoder(dec, enc, attention_mask, torch.stack(alive, dim=1))
        if aux is not None:
            aux.extend(step.aux.items())
        nxt = step.logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        out.append(nxt)
        done = done | (nxt == eos_id)
        alive.append(~done)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        if bool(done.all()):
            break
    return torch.stack(out, dim=1) if out else dec[:, :0]
