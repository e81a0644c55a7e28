"""Batched inference for evaluation: log-likelihood of answer candidates, and greedy generation.

``score_candidates`` runs the encoder (and the decoder's cross-attention key/value projections)
once per prompt and scores all of its candidates together in one decoder batch. ``generate`` decodes
greedily with the KV cache, prompts sorted by length so that a batch holds similar lengths (less
padding); results come back in the caller's order.

With dropless routing (the evaluate stage's default) every token goes to its experts whatever else
is in the batch, so scores do not depend on batch size, composition or padding (up to float
rounding). An expert-choice encoder always depends on its group: experts pick their top tokens
among the batch's real tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flanmoe.model.generate import KVCache, greedy_generate
from flanmoe.model.transformer import EOS_ID, PAD_ID, FlanMoEModel, shift_right

StatsHook = Callable[[dict], None]  # receives {layer: RouterStats} of one forward


@dataclass
class CandidateScore:
    """Log-likelihood of one candidate answer (its tokens, eos included) given the prompt."""

    logprob: float  # sum over the candidate's tokens
    num_tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.num_tokens, 1)


def _pad(seqs: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out.to(device)


def _length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``prompts`` sorted by length, cut into batches (similar lengths: little padding)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} must be >= 1")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _stats(aux: list, hook: StatsHook | None) -> None:
    # ``aux`` holds one entry per MoE layer per forward: generation appends the encoder's layers once
    # and the decoder's at every step, so a layer name seen again starts the next forward (one dict
    # keyed by layer would keep only the last step's decoder stats).
    if hook is None or not aux:
        return
    forward: dict = {}
    for name, a in aux:
        if name in forward:
            hook(forward)
            forward = {}
        forward[name] = a.stats
    hook(forward)


@torch.no_grad()
def score_candidates(
    model: FlanMoEModel,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    batch_size: int = 32,
    on_stats: StatsHook | None = None,
) -> list[list[CandidateScore]]:
    """For prompt ``i`` (ids ending with eos) and each of its candidates (ids ending with eos), the
    candidate's log-likelihood; ``batch_size`` prompts per encoder pass (their candidates together).
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"candidates: {len(candidates)} lists for {len(prompts)} prompts")
    device = next(model.parameters()).device
    out: list[list[CandidateScore] | None] = [None] * len(prompts)
    for rows in _length_batches(prompts, batch_size):
        aux: list = []
        ids = _pad([prompts[i] for i in rows], device)
        mask = ids != PAD_ID
        encoded = model.run_encoder(ids, mask)
        aux.extend(encoded.aux.items())
        enc = encoded.hidden
        owner = [j for j, i in enumerate(rows) for _ in candidates[i]]
        labels = _pad([c for i in rows for c in candidates[i]], device)
        index = torch.as_tensor(owner, device=device)
        dec_mask = labels != PAD_ID
        # cross-attention keys/values once per prompt, shared by its candidates (through the cache)
        cache = KVCache.for_model(model)
        for layer, block in enumerate(model.decoder.blocks):
            k, v = block.cross_attn.project_kv(enc)
            cache.cross_kv[layer] = (k[index], v[index])
        decoded = cache.decode(model, shift_right(labels), enc, mask[index], dec_mask)
        aux.extend(decoded.aux.items())
        logits = decoded.logits
        logp = F.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)
        sums = (logp * dec_mask).sum(-1).tolist()
        counts = dec_mask.sum(-1).tolist()
        _stats(aux, on_stats)
        k = 0
        for i in rows:
            n = len(candidates[i])
            out[i] = [CandidateScore(s, c) for s, c in zip(sums[k : k + n], counts[k : k + n], strict=True)]
            k += n
    return out  # type: ignore[return-value]


@torch.no_grad()
def generate(
    model: FlanMoEModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 32,
    batch_size: int = 32,
    on_stats: StatsHook | None = None,
    eos_id: int = EOS_ID,
) -> list[list[int]]:
    """Greedy continuation of each prompt (ids, without eos and padding), ``batch_size`` at a time."""
    device = next(model.parameters()).device
    out: list[list[int] | None] = [None] * len(prompts)
    for rows in _length_batches(prompts, batch_size):
        aux: list = []
        ids = _pad([prompts[i] for i in rows], device)
        gen = greedy_generate(
            model, ids, ids != PAD_ID, max_new_tokens=max_new_tokens, eos_id=eos_id, aux=aux
        )
        _stats(aux, on_stats)
        for i, seq in zip(rows, gen.tolist(), strict=True):
            out[i] = seq[: seq.index(eos_id)] if eos_id in seq else [t for t in seq if t != PAD_ID]
    return out  # type: ignore[return-value]


__all__ = ["CandidateScore", "generate", "score_candidates"]
