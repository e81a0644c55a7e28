"""Routers: decide which expert(s) each token of a group goes to, with what weight.

A router turns a group of tokens ``[tokens, d_model]`` into a ``Routing``: a list of kept
(token, expert, gate) assignments **sorted by expert** (so a dispatcher can cut it into contiguous
per-expert segments), the number of tokens per expert, auxiliary losses and statistics.

- ``TokenChoiceTopKRouter``: each token picks its top-k experts (switch: k=1, gshard/st_moe: k=2).
  Each expert keeps at most ``capacity`` assignments; first choices of all tokens take priority over
  second choices (GShard), then earlier tokens first. Dropped tokens pass through the residual.
- ``ExpertChoiceRouter``: each expert picks its top-c tokens of the whole group (Zhou et al. 2022).
  It sees every token of the group, future ones included, so it is for the encoder only.

Capacities come from the static group size ``T = x.shape[0]``, padding included (as T5X/Flaxformer
do), so no token count is read back to the host: no ``int()``/``.item()`` of a tensor in a forward,
and the statistics stay tensors (``stats.py``). The one data-dependent shape is the compaction of
kept token-choice assignments when some are dropped or masked (a boolean index, whose size a CUDA
device reports back inside torch); dropless routing without padding and expert choice are static.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.stats import RouterStats, RouterStatsAccumulator, reduce_router_stats

__all__ = [
    "ExpertChoiceRouter",
    "Router",
    "RouterStats",
    "RouterStatsAccumulator",
    "Routing",
    "TokenChoiceTopKRouter",
    "reduce_router_stats",
]


@dataclass
class Routing:
    """Kept assignments of one group, sorted by expert.

    ``token_idx``/``expert_idx``/``gates`` are ``[assignments]``; ``tokens_per_expert`` is ``[E]``
    and sums to the number of assignments. ``num_tokens`` is the static group size ``T`` (padding
    included). ``load_balance_loss`` and ``z_loss`` are scalars (unweighted; the MoE layer applies
    the coefficients). ``stats`` count real tokens only.
    """

    token_idx: Tensor
    expert_idx: Tensor
    gates: Tensor
    tokens_per_expert: Tensor
    num_tokens: int
    load_balance_loss: Tensor
    z_loss: Tensor
    stats: RouterStats


def expert_capacity(
    num_tokens: int, num_experts: int, k: int, capacity_factor: float, min_capacity: int
) -> int:
    """Slots per expert: ``ceil(capacity_factor * tokens * k / experts)``, at least ``min_capacity``."""
    cap = math.ceil(capacity_factor * num_tokens * k / num_experts)
    return max(cap, min_capacity)


def router_z_loss(logits: Tensor, mask: Tensor | None) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of ``logsumexp(logits)^2``. ``logits`` ``[T, E]``."""
    z = torch.logsumexp(logits, dim=-1) ** 2
    return _masked_mean(z, mask)


def load_balance_loss(probs: Tensor, expert_idx: Tensor, mask: Tensor | None) -> Tensor:
    """Switch load-balancing loss ``E * sum_e f_e * P_e`` (before capacity, as in T5X/Flaxformer).

    ``probs`` ``[T, E]`` router probabilities; ``expert_idx`` ``[T, k]`` chosen experts.
    ``f_e`` = fraction of tokens with ``e`` among their choices, ``P_e`` = mean probability of ``e``.
    Equals 1 for a uniform top-1 router (k for top-k).
    """
    num_experts = probs.shape[-1]
    chosen = torch.zeros_like(probs).scatter_(1, expert_idx, 1.0)  # [T, E] 1 where e is chosen
    if mask is not None:
        m = mask.to(probs.dtype)[:, None]
        denom = m.sum().clamp_min(1)
        f = (chosen * m).sum(0) / denom
        p = (probs * m).sum(0) / denom
    else:
        f, p = chosen.mean(0), probs.mean(0)
    return num_experts * (f * p).sum()


def _masked_mean(v: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return v.mean()
    m = mask.to(v.dtype)
    return (v * m).sum() / m.sum().clamp_min(1)


class Router(nn.Module):
    """Base: a linear gate ``[d_model] -> [E]`` logits, optional jitter and float32 computation."""

    def __init__(self, d_model: int, num_experts: int, jitter: float = 0.0, fp32: bool = True):
        super().__init__()
        self.num_experts = num_experts
        self.jitter = jitter
        self.fp32 = fp32
        self.gate = nn.Linear(d_model, num_experts, bias=False)

    def logits(self, x: Tensor) -> Tensor:
        """Router logits ``[T, E]`` for tokens ``x`` ``[T, d_model]``."""
        if self.training and self.jitter > 0:  # Switch: multiplicative noise on the router input
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        if self.fp32 and x.dtype != torch.float64:  # selective precision: softmax in float32
            return F.linear(x.float(), self.gate.weight.float())
        return self.gate(x)

    def max_tokens_per_expert(self, num_tokens: int) -> int | None:
        """Static bound on any expert's assignments in a group of ``num_tokens`` (``None``: none known)."""
        return None

    def forward(
        self, x: Tensor, mask: Tensor | None = None, seq_len: int | None = None
    ) -> Routing:  # pragma: no cover - abstract
        raise NotImplementedError


class TokenChoiceTopKRouter(Router):
    """Each token picks its top-k experts; experts keep at most ``capacity`` of them.

    ``capacity_factor`` is ``(train, eval)``; ``module.training`` picks one. ``fixed_capacity``, if
    set, replaces both: slots per expert in each sequence, whatever its length (HF Switch's
    ``expert_capacity``; see ``forward``).
    ``dropless`` keeps every assignment. ``normalize_gates`` rescales the k gates of a token to sum to 1 (only for k > 1).
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        k: int,
        capacity_factor: tuple[float, float] = (1.25, 2.0),
        min_capacity: int = 4,
        dropless: bool = False,
        normalize_gates: bool = True,
        fixed_capacity: int | None = None,
        jitter: float = 0.0,
        fp32: bool = True,
    ):
        super().__init__(d_model, num_experts, jitter, fp32)
        self.k = k
        self.capacity_factor = capacity_factor
        self.min_capacity = min_capacity
        self.fixed_capacity = fixed_capacity
        self.dropless = dropless
        self.normalize_gates = normalize_gates

    def capacity(self, num_tokens: int) -> int | None:
        """Slots per expert for a group of ``num_tokens`` (``None`` when dropless)."""
        if self.dropless:
            return None
        if self.fixed_capacity is not None:
            return self.fixed_capacity
        cf = self.capacity_factor[0] if self.training else self.capacity_factor[1]
        return expert_capacity(num_tokens, self.num_experts, self.k, cf, self.min_capacity)

    def max_tokens_per_expert(self, num_tokens: int) -> int | None:
        """Static upper bound on an expert's kept assignments (``None`` when dropless: it would be T;
        and with ``fixed_capacity``, whose bound depends on the number of sequences)."""
        if self.fixed_capacity is not None:
            return None
        cap = self.capacity(num_tokens)
        return None if cap is None else min(cap, num_tokens)

    def forward(self, x: Tensor, mask: Tensor | None = None, seq_len: int | None = None) -> Routing:
        """Route ``x`` ``[T, d_model]``; ``mask`` ``[T]`` bool, False = padding (never routed).

        Capacity is ``capacity(T)`` with ``T`` the group size including padding (T5X/Flaxformer).
        With ``fixed_capacity`` and ``seq_len``, each run of ``seq_len`` tokens (a sequence) has its
        own ``fixed_capacity`` slots per expert, earlier tokens first, as HF Switch routes.
        """
        T, E, k = x.shape[0], self.num_experts, self.k
        logits = self.logits(x)
        probs = logits.softmax(dim=-1)  # [T, E]
        top_p, top_e = probs.topk(k, dim=-1)  # [T, k]
        gates = top_p / top_p.sum(-1, keepdim=True) if (self.normalize_gates and k > 1) else top_p
        lb = load_balance_loss(probs, top_e, mask)
        zl = router_z_loss(logits, mask)

        # Rank-major flattening: all first choices come before all second choices (GShard priority).
        flat_e = top_e.t().reshape(-1)  # [k*T]
        if mask is not None:  # padding goes to a sentinel expert E that keeps nothing
            flat_e = flat_e.masked_fill(~mask.repeat(k), E)
        flat_tok = torch.arange(T, device=x.device).repeat(k)
        flat_g = gates.t().reshape(-1)
        cap = self.capacity(T)
        per_seq = cap is not None and self.fixed_capacity is not None and seq_len and T % seq_len == 0
        G = T // seq_len if per_seq else 1  # capacity groups: the sequences, or the whole batch
        # Bins (expert, group), expert-major: sorted by bin is sorted by expert.
        key = flat_e * G + flat_tok // seq_len if G > 1 else flat_e
        sorted_key, order = torch.sort(key, stable=True)  # stable: keeps the priority order per bin
        counts = _bincount(key, (E + 1) * G)  # last G bins = padding
        kept = counts[: E * G] if cap is None else counts[: E * G].clamp(max=cap)
        per_expert = kept.view(E, G).sum(1)
        if cap is not None or mask is not None:  # compact the kept assignments (data-dependent size)
            starts = torch.cumsum(counts, 0) - counts
            pos = torch.arange(flat_e.numel(), device=x.device) - starts[sorted_key]  # slot in its bin
            keep = sorted_key < E * G
            if cap is not None:
                keep &= pos < cap
            order, sorted_key = order[keep], sorted_key[keep]
        sorted_e = sorted_key // G if G > 1 else sorted_key
        token_idx, kept_gates = flat_tok[order], flat_g[order]

        num_real = _num_real(mask, T, x.device)
        routed = torch.zeros(T, dtype=torch.bool, device=x.device)
        routed[token_idx] = True
        dropped_tokens = num_real - routed.sum()
        dropped_assign = num_real * k - per_expert.sum()
        stats = RouterStats.compute(per_expert, num_real, dropped_tokens, dropped_assign, probs, mask)
        return Routing(token_idx, sorted_e, kept_gates, per_expert, T, lb, zl, stats)


class ExpertChoiceRouter(Router):
    """Each expert picks its top-c tokens of the group, ``c = capacity * tokens / experts``.

    Tokens may go to several experts or to none (dropped). No load-balancing loss is needed (each
    expert gets exactly c tokens); the z-loss is returned for use if its coefficient is set.
    """

    def __init__(
        self,
        d_model: int,
        num_experts: int,
        capacity: float = 2.0,
        jitter: float = 0.0,
        fp32: bool = True,
    ):
        super().__init__(d_model, num_experts, jitter, fp32)
        self.capacity_factor = capacity

    def capacity(self, num_tokens: int) -> int:
        """Tokens each expert takes from a group of ``num_tokens`` (at most all of them)."""
        return max(1, min(num_tokens, math.ceil(self.capacity_factor * num_tokens / self.num_experts)))

    def max_tokens_per_expert(self, num_tokens: int) -> int:
        """Static upper bound on an expert's assignments: exactly ``capacity(num_tokens)``."""
        return self.capacity(num_tokens)

    def forward(self, x: Tensor, mask: Tensor | None = None, seq_len: int | None = None) -> Routing:
        """Route ``x`` ``[T, d_model]``; ``mask`` ``[T]`` bool, False = padding (``seq_len`` unused).

        ``c = capacity(T)`` with ``T`` the group size including padding, so the routing has a static
        shape (``E * c`` assignments). Experts rank real tokens above padding; when a group has fewer
        than ``c`` real tokens, an expert's padding picks stay in the routing with gate 0 (a zero
        update to a padding position) and are left out of the statistics.
        """
        T, E = x.shape[0], self.num_experts
        logits = self.logits(x)
        probs = logits.softmax(dim=-1)  # [T, E]: token-to-expert affinities
        c = self.capacity(T)
        scores = probs.t()  # [E, T]
        if mask is not None:  # padding scores below every real token (probs >= 0)
            scores = scores.masked_fill(~mask[None, :], -1.0)
        gates, token_idx = scores.topk(c, dim=-1)  # [E, c]: each expert's chosen tokens, expert-major
        expert_idx = torch.arange(E, device=x.device).repeat_interleave(c)
        token_idx, gates = token_idx.reshape(-1), gates.reshape(-1)
        per_expert = torch.full((E,), c, dtype=torch.long, device=x.device)
        real_per_expert = per_expert
        if mask is not None:
            real = mask[token_idx]  # [E*c]
            gates = torch.where(real, gates, torch.zeros_like(gates))  # padding picks: no update
            real_per_expert = real.reshape(E, c).sum(-1)
        routed = torch.zeros(T, dtype=torch.bool, device=x.device)
        routed[token_idx] = True
        num_real = _num_real(mask, T, x.device)
        dropped_tokens = num_real - (routed if mask is None else routed & mask).sum()
        zero = logits.new_zeros(())
        stats = RouterStats.compute(real_per_expert, num_real, dropped_tokens, zero.long(), probs, mask)
        return Routing(token_idx, expert_idx, gates, per_expert, T, zero, router_z_loss(logits, mask), stats)


def _bincount(idx: Tensor, n: int) -> Tensor:
    """``torch.bincount(idx, minlength=n)`` for ``idx < n`` without its host sync on CUDA."""
    return torch.zeros(n, dtype=torch.long, device=idx.device).index_add_(0, idx, torch.ones_like(idx))


def _num_real(mask: Tensor | None, T: int, device: torch.device) -> Tensor:
    """Real tokens of the group as a 0-d long tensor (no host sync)."""
    return mask.sum() if mask is not None else torch.full((), T, dtype=torch.long, device=device)
