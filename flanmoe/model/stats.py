"""Router statistics: detached device tensors in the forward, Python floats only for logging.

The MoE forward never moves a number to the host (no GPU stall per layer): each router returns a
``RouterStats`` of detached tensors on the model's device. ``RouterStatsAccumulator`` sums them on
the device over forwards (micro-batches, a logging interval); its ``reduce()`` (and
``reduce_router_stats``) is the one place they become Python numbers, in a single transfer.

Logged keys (``reduce``): per layer ``"<layer>/expert_fraction/<e>"``, ``"<layer>/dropped_fraction"``,
``"<layer>/entropy"``, ``"<layer>/load_max_over_mean"``; model-wide means over layers
``"moe/dropped_fraction"``, ``"moe/entropy"``, ``"moe/load_max_over_mean"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RouterStats:
    """Per-layer routing statistics of one forward (detached tensors, on the model's device)."""

    tokens_per_expert: Tensor  # [E] long: kept assignments per expert (real tokens only)
    expert_fraction: Tensor  # [E] float32: share of kept assignments per expert (sums to 1, or 0s)
    num_tokens: Tensor  # [] long: real (unmasked) tokens in the group
    dropped_tokens: Tensor  # [] long: real tokens routed to no expert (only the residual carries them)
    dropped_assignments: Tensor  # [] long: (token, expert) choices over capacity
    dropped_fraction: Tensor  # [] float32: dropped_tokens / num_tokens
    entropy: Tensor  # [] float32: mean over real tokens of the router distribution's entropy (nats)

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        tokens_per_expert: Tensor,
        num_tokens: Tensor,
        dropped_tokens: Tensor,
        dropped_assignments: Tensor,
        probs: Tensor,
        mask: Tensor | None,
    ) -> RouterStats:
        """Stats from the kept counts ``[E]``, 0-d counts, router ``probs`` ``[T, E]`` and ``mask`` ``[T]``."""
        per_expert = tokens_per_expert.detach().long()
        ent = -(probs * torch.log(probs.clamp_min(1e-20))).sum(-1)  # [T]
        if mask is None:
            entropy = ent.mean()
        else:
            m = mask.to(ent.dtype)
            entropy = (ent * m).sum() / m.sum().clamp_min(1)
        return cls(
            tokens_per_expert=per_expert,
            expert_fraction=per_expert.float() / per_expert.sum().clamp_min(1),
            num_tokens=num_tokens.detach().long(),
            dropped_tokens=dropped_tokens.detach().long(),
            dropped_assignments=dropped_assignments.detach().long(),
            dropped_fraction=dropped_tokens.float() / num_tokens.clamp_min(1).float(),
            entropy=entropy.detach().float(),
        )


class RouterStatsAccumulator:
    """Sums ``RouterStats`` over forwards on the device; ``reduce()`` turns them into log floats.

    Per layer it keeps one float64 vector ``[E + 4]``: kept assignments per expert, then real tokens,
    dropped tokens, dropped assignments and the token-weighted entropy sum (so that the reduced
    entropy and dropped fraction are token means over everything added, not means of means).
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._experts: dict[str, int] = {}
        self.count = 0  # forwards added since the last reset

    def add(self, stats: Mapping[str, RouterStats]) -> None:
        """Add one forward's ``{layer: RouterStats}`` (e.g. ``out.router_stats``); no host sync."""
        for name, s in stats.items():
            counts = torch.stack([s.num_tokens, s.dropped_tokens, s.dropped_assignments]).double()
            ent_sum = (s.entropy.double() * s.num_tokens.double()).reshape(1)
            row = torch.cat([s.tokens_per_expert.double(), counts, ent_sum])  # [E + 4]
            self._sums[name] = row if name not in self._sums else self._sums[name] + row
            self._experts[name] = s.tokens_per_expert.numel()
        self.count += 1

    def reset(self) -> None:
        """Forget everything added."""
        self._sums.clear()
        self._experts.clear()
        self.count = 0

    def reduce(self, sum_across: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Flat log floats (see the module docstring); ``{}`` if nothing was added.

        ``sum_across`` (e.g. an all-reduce SUM over data-parallel processes) is applied to the packed
        sums before the one host transfer; every process must then have added the same layers.
        """
        names = list(self._sums)
        if not names:
            return {}
        flat = torch.cat([self._sums[n] for n in names])
        if sum_across is not None:
            flat = sum_across(flat)
        values = flat.tolist()  # the one device -> host transfer
        out: dict[str, float] = {}
        dropped, entropy, load = [], [], []
        i = 0
        for name in names:
            E = self._experts[name]
            counts, (n, d_tok, _d_asg, ent_sum) = values[i : i + E], values[i + E : i + E + 4]
            i += E + 4
            total = sum(counts)
            for e, c in enumerate(counts):
                out[f"{name}/expert_fraction/{e}"] = c / total if total > 0 else 0.0
            out[f"{name}/dropped_fraction"] = d_tok / n if n > 0 else 0.0
            out[f"{name}/entropy"] = ent_sum / n if n > 0 else 0.0
            out[f"{name}/load_max_over_mean"] = max(counts) * E / total if total > 0 else 0.0
            dropped.append(out[f"{name}/dropped_fraction"])
            entropy.append(out[f"{name}/entropy"])
            load.append(out[f"{name}/load_max_over_mean"])
        out["moe/dropped_fraction"] = sum(dropped) / len(names)
        out["moe/entropy"] = sum(entropy) / len(names)
        out["moe/load_max_over_mean"] = sum(load) / len(names)
        return out


def reduce_router_stats(
    stats: Mapping[str, RouterStats] | Sequence[Mapping[str, RouterStats]],
) -> dict[str, float]:
    """Log floats of one forward's ``{layer: RouterStats}``, or of a list of them (summed first)."""
    acc = RouterStatsAccumulator()
    for s in [stats] if isinstance(stats, Mapping) else stats:
        acc.add(s)
    return acc.reduce()
