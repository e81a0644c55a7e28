"""Tokens/s of a full training step (forward + backward + AdamW) of our MoE models vs Hugging Face's
``SwitchTransformersForConditionalGeneration`` built from a config of the same shapes (random init,
no download, HF_HUB_OFFLINE=1).

    python bench/train_step.py [--presets tiny small] [--steps 6] [--quick] [--json out.json]

All: Switch top-1, E experts in every 2nd block of each stack, capacity factor 1.25, untied
embeddings, no dropout, router z-loss and load-balancing loss on, the same AdamW (foreach).
Models:
- ``ours_relu``: our model with ``ffn: relu``, the FFN/experts HF's Switch has (ReLU, 2 matrices):
  the same math as HF, so ``ours_relu/hf`` is the like-for-like speedup (the issue's target);
- ``ours``: our default T5.1.1 gated-GELU FFN/experts (3 matrices: 1.5x the FFN FLOPs), compared to
  HF per FLOP (achieved FLOP/s ratio);
- ``hf``: ``SwitchTransformersForConditionalGeneration``. It routes per sequence, ours per batch.
tokens = input + target tokens.
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below)
import sys
from pathlib import Path

# Run as `python bench/x.py`: put the repo root, not bench/, first on the path (bench/tokenize.py
# would shadow the stdlib module of that name).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:  # run as a script
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.cpu import prepare_cpu

prepare_cpu()  # before torch is imported


import argparse
import contextlib
import json
import math
import os
import platform
import random
import statistics
import time

import torch

from flanmoe.model.config import ModelConfig
from flanmoe.model.flops import accounting
from flanmoe.model.transformer import build_model


def hf_model(cfg: ModelConfig, vocab: int, enc_len: int, dec_len: int) -> torch.nn.Module:
    """HF Switch Transformer with the shapes of ``cfg`` (bench-only import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

    moe = cfg.moe
    assert moe is not None
    hf_cfg = SwitchTransformersConfig(
        vocab_size=vocab,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_encoder_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_sparse_encoder_layers=cfg.num_encoder_layers // moe.moe_every,
        num_sparse_decoder_layers=cfg.num_decoder_layers // moe.moe_every,
        num_experts=moe.num_experts,
        expert_capacity=math.ceil(moe.capacity_factor_train * max(enc_len, dec_len) / moe.num_experts),
        router_jitter_noise=0.0,
        dropout_rate=0.0,
        router_z_loss_coef=1e-3,
        router_aux_loss_coef=moe.load_balance_coef,
        tie_word_embeddings=False,
        decoder_start_token_id=0,
    )
    return SwitchTransformersForConditionalGeneration(hf_cfg)


def optimizer_step(
    model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor, hf: bool, autocast=None
) -> None:
    """One training step of ours or HF's model (the same loss, the same optimizer), under ``autocast``."""
    with autocast if autocast is not None else contextlib.nullcontext():
        if hf:
            out = model(input_ids=x, attention_mask=x != 0, labels=y, output_router_logits=True)
        else:
            out = model(x, x != 0, labels=y)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def make_step(model: torch.nn.Module, hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # same optimizer for both

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        t0 = time.perf_counter()
        optimizer_step(model, opt, x, y, hf)
        return time.perf_counter() - t0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--enc-len", type=int, default=128)
    ap.add_argument("--dec-len", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8000, help="the project tokenizer's default size")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per model (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="batch 8, 3 steps: about a minute")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.batch, args.steps = 8, 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    B, S, T, V = args.batch, args.enc_len, args.dec_len, args.vocab
    rows = []
    for preset in args.presets:
        cfg = ModelConfig(preset=preset, moe={"num_experts": args.experts, "router": "switch"})
        relu_cfg = cfg.model_copy(update={"ffn": "relu"})
        steps = {
            "ours": make_step(build_model(cfg, V).train(), hf=False),
            "ours_relu": make_step(build_model(relu_cfg, V).train(), hf=False),
            "hf": make_step(hf_model(cfg, V, S, T).train(), hf=True),
        }
        x = torch.randint(3, V, (B, S))
        y = torch.randint(3, V, (B, T))
        times: dict[str, list[float]] = {n: [] for n in steps}
        for step in steps.values():  # warm-up: first steps pay lazy init and optimizer state allocation
            for _ in range(2):
                step(x, y)
        order = list(steps)
        for _ in range(args.steps):  # interleaved, shuffled: load drifts hit every model alike
            random.shuffle(order)
            for n in order:
                times[n].append(steps[n](x, y))
        tok = B * (S + T)
        tps = {n: tok / statistics.median(v) for n, v in times.items()}
        acct, relu_acct = accounting(cfg, V, S, T), accounting(relu_cfg, V, S, T)  # HF = relu_acct
        row = dict(
            preset=preset,
            params=acct.params,
            train_flops_per_token=acct.train_flops_per_token,
            relu_train_flops_per_token=relu_acct.train_flops_per_token,
            ours_tokens_per_s=round(tps["ours"], 1),
            ours_relu_tokens_per_s=round(tps["ours_relu"], 1),
            hf_tokens_per_s=round(tps["hf"], 1),
            speedup=round(tps["ours_relu"] / tps["hf"], 2),  # same math
            # achieved FLOP/s of our gated-GELU model / HF's
            flops_speedup=round(
                tps["ours"] * acct.train_flops_per_token / (tps["hf"] * relu_acct.train_flops_per_token), 2
            ),
        )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"\nTraining step (fwd+bwd+AdamW), batch {B} x ({S} in + {T} out), vocab {V}, E={args.experts}, "
          f"{args.threads} threads, median of {args.steps}")  # fmt: skip
    print("ours_relu and hf: the same math (ReLU experts); ours: gated GELU, compared per FLOP")
    print(f"{'preset':7} {'GFLOP/tok':>9} {'relu GFLOP/tok':>14} {'hf tok/s':>9} {'ours_relu tok/s':>15} "
          f"{'ours_relu/hf':>12} {'ours tok/s':>10} {'ours/hf FLOP/s':>14}")  # fmt: skip
    for r in rows:
        print(
            f"{r['preset']:7} {r['train_flops_per_token'] / 1e9:9.3f} {r['relu_train_flops_per_token'] / 1e9:14.3f} "
            f"{r['hf_tokens_per_s']:9.0f} {r['ours_relu_tokens_per_s']:15.0f} {r['speedup']:12.2f} "
            f"{r['ours_tokens_per_s']:10.0f} {r['flops_speedup']:14.2f}"
        )
    if args.json:
        meta = dict(batch=B, enc_len=S, dec_len=T, vocab=V, experts=args.experts, threads=args.threads)
        meta.update(steps=args.steps, torch=torch.__version__, machine=platform.machine())
        args.json.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
