"""Greedy decoding, with a KV cache (one decoder position per step) or without (re-run the decoder
on the whole prefix each step, the reference the cached path must match).

With token-choice capacity in the decoder, the two paths see different routing groups (B tokens
per step vs. the whole prefix), so they agree only when no token is dropped: dropless, or capacity
large enough (eval capacity factor with ``min_capacity``). Expert-choice is never in the decoder.
Positions after a sequence's eos are masked out of routing (they neither take expert capacity nor
count in router statistics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from flanmoe.model.moe import MoEAux
    from flanmoe.model.transformer import FlanMoEModel


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

    ``aux``, if given, collects every MoE layer's output (router stats) of the encoder pass and of
    each decoding step.
    """
    if attention_mask is None:
        attention_mask = input_ids != pad_id
    B = input_ids.shape[0]
    enc = model.encode(input_ids, attention_mask, aux)
    dec = torch.full((B, 1), start_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    alive = [~done]  # per decoder position: the sequence had not ended before it
    cache = model.new_cache() if use_cache else None
    out = []
    for _ in range(max_new_tokens):
        step_in = dec[:, -1:] if use_cache else dec
        mask = alive[-1][:, None] if use_cache else torch.stack(alive, dim=1)
        logits = model.decode(step_in, enc, attention_mask, aux, decoder_mask=mask, cache=cache)[:, -1]
        nxt = logits.argmax(-1).masked_fill(done, pad_id)
        out.append(nxt)
        done = done | (nxt == eos_id)
        alive.append(~done)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        if bool(done.all()):
            break
    return torch.stack(out, dim=1) if out else dec[:, :0]
