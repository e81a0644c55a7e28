"""Global gradient-norm clipping over parameters that live on different meshes (EP vs FSDP) or none.

``torch.nn.utils.clip_grad_norm_`` fails when DTensor gradients sit on different meshes
(pytorch#180346): compute one norm per mesh, combine them, clip each group (torchtitan's
``_clip_grad_norm_with_ep``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor


def clip_grad_norm_(
    model_or_params: nn.Module | Iterable[Tensor], max_norm: float | None, norm_type: float = 2.0
) -> Tensor:
    """Total ``norm_type`` norm of all gradients (a plain 0-dim tensor, equal on every rank); when
    ``max_norm`` is given, scale the gradients in place so that it is at most ``max_norm``."""
    params = model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    groups: dict[object, list[Tensor]] = {}  # mesh (None for plain tensors) -> params with a gradient
    for p in params:
        if p.grad is not None:
            key = p.grad.device_mesh if isinstance(p.grad, DTensor) else None
            groups.setdefault(key, []).append(p)
    if not groups:
        return torch.zeros(())
    norms = []
    for group in groups.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], norm_type)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)  # reduce over the mesh
    stacked = torch.stack([n.float() for n in norms])
    if math.isinf(norm_type):
        total = stacked.max()
    else:
        total = (stacked**norm_type).sum() ** (1.0 / norm_type)
    if max_norm is not None:
        for group in groups.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total
