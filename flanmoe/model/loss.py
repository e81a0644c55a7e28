"""The token cross-entropy every loss in the project is made of (training, validation, scoring).

Logits in half precision are upcast so the softmax over the vocabulary runs in float32; labels equal
to ``IGNORE_INDEX`` (-100) are left out of the loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def token_cross_entropy(logits: Tensor, labels: Tensor, reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (..., vocab) against ``labels`` (...), over the target tokens."""
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction=reduction)


__all__ = ["IGNORE_INDEX", "token_cross_entropy"]
