"""Weight initialization: every rule of the model's T5 init, in one place.

T5 init: a weight ``~ N(0, factor / sqrt(fan_in))`` (``factor`` = ``ModelConfig.init_std``), with the
``1 / sqrt(d_kv)`` that attention does not apply folded into the queries; token embeddings
``~ N(0, factor)``; relative position biases, the untied LM head and router gates
``~ N(0, factor / sqrt(d_model))``; norms to 1.

``FlanMoEModel.reset_parameters`` applies these rules to every module; ``GroupedExperts`` and
``MoELayer.from_config`` apply theirs when built on their own (so a standalone layer is initialized
too, and a model built from a seed draws the same random numbers in the same order as ever).
The functions take modules by their attributes, so this module imports nothing of the model.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def init_normal_(weight: Tensor, std: float) -> None:
    """``nn.init.normal_(weight, std=std)``, skipped on the meta device: there is nothing to fill there
    (a model built to receive loaded weights), and torch's meta path for it imports torch._dynamo
    (~0.8 s of a stage's start-up). Meta tensors draw nothing from the RNG either way."""
    if not weight.is_meta:
        nn.init.normal_(weight, std=std)


def init_embedding_(weight: Tensor, factor: float) -> None:
    """Token embeddings ``[vocab, d_model]``: ``N(0, factor)``."""
    init_normal_(weight, std=factor)


def init_by_d_model_(weight: Tensor, factor: float, d_model: int) -> None:
    """LM head, relative position bias, router gate: ``N(0, factor / sqrt(d_model))``."""
    init_normal_(weight, std=factor * d_model**-0.5)


def init_attention_(attn: Any, factor: float) -> None:
    """``Attention`` (``q``, ``k``, ``v``, ``o`` linears): q carries attention's missing ``1/sqrt(d_kv)``."""
    d_model = attn.q.in_features
    init_normal_(attn.q.weight, std=factor * (d_model * attn.d_kv) ** -0.5)
    init_normal_(attn.k.weight, std=factor * d_model**-0.5)
    init_normal_(attn.v.weight, std=factor * d_model**-0.5)
    init_normal_(attn.o.weight, std=factor * (attn.num_heads * attn.d_kv) ** -0.5)


def init_ffn_(ffn: Any, factor: float) -> None:
    """Dense ``FFN``: each linear ``N(0, factor / sqrt(fan_in))``, input projections first."""
    for lin in (ffn.wi_0, ffn.wi_1) if ffn.activation == "gated_gelu" else (ffn.wi,):
        init_normal_(lin.weight, std=factor * lin.in_features**-0.5)
    init_normal_(ffn.wo.weight, std=factor * ffn.wo.in_features**-0.5)


def init_experts_(experts: Any, factor: float) -> None:
    """``GroupedExperts``: ``[E, d_model, d_ff]`` inputs ``N(0, factor / sqrt(d_model))``, then the
    ``[E, d_ff, d_model]`` output ``N(0, factor / sqrt(d_ff))``."""
    for w in experts.input_weights():
        init_normal_(w, std=factor * experts.d_model**-0.5)
    init_normal_(experts.wo, std=factor * experts.d_ff**-0.5)


def init_norm_(weight: Tensor) -> None:
    """RMSNorm scale: ones."""
    nn.init.ones_(weight)
