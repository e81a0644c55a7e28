"""Greedy decoding, with a KV cache (one decoder position per step) or without (re-run the decoder
on the whole prefix each step, the reference the cached path must match).

With token-choice capacity in the decoder, the two paths see different routing groups (B tokens
per step vs. the whole prefix), so they agree only when no token is dropped: dropless, or capacity
large enough (eval capacity factor with ``min_capacity``). Expert-choice is never in the decoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
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
) -> Tensor:
    """Greedy ids ``[B, <= max_new_tokens]`` for ``input_ids`` ``[B, S]``; pad after a sequence's eos."""
    if attention_mask is None:
        attention_mask = input_ids != pad_id
    B = input_ids.shape[0]
    enc = model.encode(input_ids, attention_mask)
    dec = torch.full((B, 1), start_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    cache = model.new_cache() if use_cache else None
    out = []
    for _ in range(max_new_tokens):
        step_in = dec[:, -1:] if use_cache else dec
        logits = model.decode(step_in, enc, attention_mask, cache=cache)[:, -1]  # [B, vocab]
        nxt = logits.argmax(-1).masked_fill(done, pad_id)
        out.append(nxt)
        done |= nxt == eos_id
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        if bool(done.all()):
            break
    return torch.stack(out, dim=1) if out else dec[:, :0]
