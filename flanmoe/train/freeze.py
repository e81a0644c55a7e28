"""Freezing for the paper's fine-tuning ablations: freeze the gate (routers), the experts, every
non-MoE parameter, or nothing. Frozen parameters get ``requires_grad=False`` before the optimizer is
built, so they receive no gradient and the optimizer holds no state for them."""

from __future__ import annotations

from torch import nn

from flanmoe.grid import FreezeOption
from flanmoe.model.transformer import FlanMoEModel

# which param_group() each option freezes: gate = routers, experts = expert FFNs, non_moe = the rest
_FROZEN: dict[str, set[str]] = {
    "none": set(),
    "gate": {"router"},
    "experts": {"experts"},
    "non_moe": {"dense"},
}


def check_freeze(option: FreezeOption, is_moe: bool) -> None:
    """A dense model has no gate or experts: only ``none`` applies (ValueError naming ``freeze``)."""
    if option != "none" and not is_moe:
        raise ValueError(f"freeze: {option!r} needs an MoE arch (a dense model has no gate or experts)")


def apply_freeze(model: nn.Module, option: FreezeOption) -> dict[str, int]:
    """Set ``requires_grad=False`` on the parameters ``option`` freezes; returns the parameter counts
    ``{"frozen": n, "trainable": m}``. ``model``: a plain ``FlanMoEModel`` (before parallelization)."""
    if not isinstance(model, FlanMoEModel):
        raise TypeError("apply_freeze: freeze the plain FlanMoEModel before parallelizing it")
    check_freeze(option, model.cfg.moe is not None)
    counts = {"frozen": 0, "trainable": 0}
    for name, p in model.named_parameters():
        frozen = model.param_group(name) in _FROZEN[option]
        p.requires_grad_(not frozen)
        counts["frozen" if frozen else "trainable"] += p.numel()
    return counts
