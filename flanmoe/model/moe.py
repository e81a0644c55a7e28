"""The MoE layer: Router -> Dispatcher -> Experts -> Dispatcher.combine, plus its aux losses.

It replaces the FFN of every ``moe_every``-th block. One call routes one group: all tokens of the
batch given to it (padding excluded through ``mask``); only a fixed ``expert_capacity`` is counted per
sequence (HF Switch). The forward has no host sync on the default
(``grouped_mm``) experts path; its statistics stay device tensors (``stats.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from flanmoe.model.config import FFNActivation, MoEConfig, RouterName
from flanmoe.model.dispatch import LocalDispatcher, TokenDispatcher
from flanmoe.model.experts import ExpertsBackend, GroupedExperts
from flanmoe.model.init import init_by_d_model_
from flanmoe.model.router import ExpertChoiceRouter, Router, RouterStats, TokenChoiceTopKRouter


class MoEAux(NamedTuple):
    """What one MoE layer returns besides its output (a tuple: FSDP and autograd hooks see its tensors)."""

    loss: Tensor  # weighted aux loss: load_balance_coef * load_balance + z_loss_coef * z_loss
    load_balance_loss: Tensor  # unweighted Switch load-balancing loss
    z_loss: Tensor  # unweighted router z-loss
    stats: RouterStats


def build_router(name: RouterName, cfg: MoEConfig, d_model: int) -> Router:
    """The router class for ``name`` with the settings of ``cfg``."""
    common = dict(jitter=cfg.router_jitter, fp32=cfg.router_fp32)
    if name == "expert_choice":
        return ExpertChoiceRouter(d_model, cfg.num_experts, capacity=cfg.expert_choice_capacity, **common)
    k = cfg.k_for(name)
    assert k is not None
    return TokenChoiceTopKRouter(
        d_model,
        cfg.num_experts,
        k=k,
        capacity_factor=(cfg.capacity_factor_train, cfg.capacity_factor_eval),
        min_capacity=cfg.min_capacity,
        fixed_capacity=cfg.expert_capacity,
        dropless=cfg.dropless,
        normalize_gates=cfg.normalize_gates,
        **common,
    )


class MoELayer(nn.Module):
    """Sparse FFN: ``[B, S, d_model]`` -> ``[B, S, d_model]`` and an ``MoEAux``.

    ``router``, ``experts`` and ``dispatcher`` are swappable parts; an expert-parallel setup replaces
    ``dispatcher`` (and shards ``experts``) after construction.
    """

    def __init__(
        self,
        router: Router,
        experts: GroupedExperts,
        load_balance_coef: float = 0.01,
        z_loss_coef: float = 0.0,
        dispatcher: TokenDispatcher | None = None,
    ):
        super().__init__()
        self.router = router
        self.experts = experts
        self.dispatcher = dispatcher or LocalDispatcher()
        self.load_balance_coef = load_balance_coef
        self.z_loss_coef = z_loss_coef

    @classmethod
    def from_config(
        cls,
        cfg: MoEConfig,
        router: RouterName,
        d_model: int,
        d_ff: int,
        init_std: float = 1.0,
        backend: ExpertsBackend = "auto",
        ffn: FFNActivation = "gated_gelu",
    ) -> MoELayer:
        """An MoE layer with router ``router`` and the experts/loss settings of ``cfg``."""
        experts = GroupedExperts(cfg.num_experts, d_model, d_ff, cfg.expert_dropout, backend, init_std, ffn)
        layer = cls(
            build_router(router, cfg, d_model), experts, cfg.load_balance_coef, cfg.resolved_z_loss_coef
        )
        init_by_d_model_(layer.router.gate.weight, init_std, d_model)
        return layer

    def _capacity_bound(self, num_tokens: int) -> int | None:
        """Static bound on the tokens of one local expert (spares the ``bmm`` experts a host sync).

        Only known for the local dispatcher: an expert-parallel one gathers tokens from every rank.
        """
        if type(self.dispatcher) is not LocalDispatcher:
            return None
        return self.router.max_tokens_per_expert(num_tokens)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, MoEAux]:
        """``x`` ``[B, S, d]`` (or ``[T, d]``), ``mask`` same leading shape, bool, False = padding."""
        if torch.compiler.is_compiling():  # data-dependent routing + grouped kernel: outside the graph
            return torch.compiler.disable(_eager_forward)(self, x, mask)
        return self._forward(x, mask)

    def _forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, MoEAux]:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        flat_mask = mask.reshape(-1).bool() if mask is not None else None
        routing = self.router(tokens, flat_mask, seq_len=shape[-2] if len(shape) == 3 else None)
        expert_in, per_expert, ctx = self.dispatcher.dispatch(tokens, routing)
        expert_out = self.experts(expert_in, per_expert, self._capacity_bound(routing.num_tokens))
        y = self.dispatcher.combine(expert_out, ctx).reshape(shape)
        loss = self.load_balance_coef * routing.load_balance_loss + self.z_loss_coef * routing.z_loss
        return y, MoEAux(loss, routing.load_balance_loss, routing.z_loss, routing.stats)


def _eager_forward(layer: MoELayer, x: Tensor, mask: Tensor | None) -> tuple[Tensor, MoEAux]:
    """``MoELayer._forward`` outside any ``torch.compile`` graph (one graph break per MoE layer)."""
    return layer._forward(x, mask)
