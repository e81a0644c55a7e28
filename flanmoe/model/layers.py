"""T5.1.1 building blocks: RMSNorm, bucketed relative position bias, attention, FFN (gated GELU,
or the ReLU FFN of T5 v1.0 and the original Switch Transformer).

No biases anywhere; attention logits are not scaled by ``1/sqrt(d_kv)`` (T5 folds it into init:
``init.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flanmoe.model.config import FFNActivation


def embedding(num_embeddings: int, dim: int) -> nn.Embedding:
    """``nn.Embedding(num_embeddings, dim)``; on the meta device without its own random init (see
    ``init.init_normal_``). Elsewhere it draws that init as before, so seeded models stay the same."""
    if torch.get_default_device().type == "meta":
        return nn.Embedding(num_embeddings, dim, _weight=torch.empty(num_embeddings, dim))
    return nn.Embedding(num_embeddings, dim)


class RMSNorm(nn.Module):
    """T5 layer norm: ``x / rms(x) * weight``, no mean subtraction, no bias, computed in float32."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[..., d_model]`` -> same shape and dtype."""
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucket of ``key_pos - query_pos``: exact for small distances, log-spaced up to
    ``max_distance``; bidirectional splits the buckets between past and future."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:  # causal: only the past (and now) has distinct buckets
        n = (-relative_position).clamp_min(0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = (
        max_exact
        + (
            torch.log(n.float().clamp_min(1) / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = large.clamp_max(num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head), shared by all layers of a stack (T5)."""

    def __init__(self, num_heads: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.embedding = embedding(num_buckets, num_heads)

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> Tensor:
        """Bias ``[1, heads, q_len, k_len]`` for queries at ``q_offset..q_offset+q_len-1``, keys at
        ``0..k_len-1``; in a causal stack future keys get a large negative value."""
        device = self.embedding.weight.device
        q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        rel = k_pos - q_pos
        bucket = relative_position_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        bias = self.embedding(bucket).permute(2, 0, 1).unsqueeze(0)  # [1, H, q, k]
        if not self.bidirectional:
            bias = bias.masked_fill(rel > 0, torch.finfo(bias.dtype).min)
        return bias


def padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``mask`` ``[B, S]`` (1 = real key) -> additive bias ``[B, 1, 1, S]`` (large negative on padding)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class Attention(nn.Module):
    """Multi-head attention, no biases, no 1/sqrt(d) scaling; ``d_inner = heads * d_kv``."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.d_kv, self.dropout = num_heads, d_kv, dropout
        inner = num_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        B, S, _ = x.shape
        return x.view(B, S, self.num_heads, self.d_kv).transpose(1, 2)  # [B, H, S, d_kv]

    def project_kv(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[B, H, S, d_kv]`` of ``y`` ``[B, S, d_model]`` (what a KV cache stores)."""
        return self._heads(self.k(y)), self._heads(self.v(y))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
        """Queries from ``x`` ``[B, Sq, d]``, keys/values ``[B, H, Sk, d_kv]``, additive ``bias``
        broadcastable to ``[B, H, Sq, Sk]`` -> ``[B, Sq, d]``."""
        q = self._heads(self.q(x))
        if bias is not None:
            bias = bias.to(q.dtype)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=1.0)
        B, H, S, dk = out.shape
        return self.o(out.transpose(1, 2).reshape(B, S, H * dk))


class FFN(nn.Module):
    """Dense FFN, no biases. ``gated_gelu`` (T5.1.1): ``wo( gelu(x wi_0) * (x wi_1) )``;
    ``relu`` (T5 v1.0, Switch, HF ``SwitchTransformersDenseActDense``): ``wo( relu(x wi) )``."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: FFNActivation = "gated_gelu"
    ):
        super().__init__()
        self.activation = activation
        if activation == "gated_gelu":
            self.wi_0 = nn.Linear(d_model, d_ff, bias=False)
            self.wi_1 = nn.Linear(d_model, d_ff, bias=False)
        else:
            self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., d_model]`` -> ``[..., d_model]``."""
        if self.activation == "gated_gelu":
            h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            h = F.relu(self.wi(x))
        return self.wo(self.dropout(h))
