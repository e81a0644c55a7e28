"""Forward+backward time of our MoE layer vs a dense FFN of equal active FLOPs, and vs Hugging Face's
``SwitchTransformersSparseMLP``, on the same tokens (CPU).

    python bench/moe_layer.py [--tokens 4096] [--repeats 7] [--threads 2] [--json out.json]

Rows: router (top-1 / top-2) x E (8, 64). Columns, all medians over interleaved repeats:
- dense: gated-GELU FFN with d_ff (top-1) or 2*d_ff (top-2): the same active FLOPs as the MoE layer;
- ours: our MoE layer, dropless (every token through exactly k experts: the equal-FLOPs comparison),
  including router, aux losses, dispatch and combine; ours/dense is the target ratio;
- ours_cf: our layer with capacity factor 1.25 (tokens over capacity dropped);
- hf: ``SwitchTransformersSparseMLP`` (top-1 only) with the same d_model, d_ff, E and capacity
  factor 1.25. Its experts are 2-matmul ReLU FFNs: 2/3 of our gated-GELU FLOPs per expert;
- ours_relu: our layer with ``ffn: relu`` experts and capacity factor 1.25: the same math and shapes
  as hf, so hf/ours_relu is the like-for-like comparison;
- hf_eq: the HF layer with d_ff * 3/2, i.e. the same FLOPs per token as our gated-GELU ours_cf.
hf/ours_relu > 1 and hf_eq/ours_cf > 1 mean ours is faster.

floor/dense: a lower bound for any MoE layer on this machine. Beyond the dense FFN's work, a
fwd+bwd must read the other ``E - k`` experts' weights twice (forward, input gradient) and write
their gradients once: ``3 * (E - k) * 3 * d_model * d_ff * 4`` bytes, at the copy bandwidth measured
in the same run. floor = dense + that traffic / bandwidth (routing and dispatch taken as free).
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
import json
import math
import os
import platform
import random
import statistics
import time

import torch

from flanmoe.model.config import MoEConfig
from flanmoe.model.layers import FFN
from flanmoe.model.moe import MoELayer


def hf_switch_layer(d_model: int, d_ff: int, num_experts: int, tokens: int, capacity_factor: float):
    """HF's Switch MoE MLP (bench-only import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersSparseMLP,
    )

    cfg = SwitchTransformersConfig(
        d_model=d_model,
        d_ff=d_ff,
        num_experts=num_experts,
        expert_capacity=math.ceil(capacity_factor * tokens / num_experts),
        router_jitter_noise=0.0,
    )
    return SwitchTransformersSparseMLP(cfg)


def fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    """Seconds for one forward + backward (aux loss included for our MoE layer)."""
    for p in layer.parameters():
        p.grad = None
    x = x.detach().requires_grad_()
    t0 = time.perf_counter()
    out = layer(x)
    if isinstance(out, tuple):  # ours: (y, MoEAux)
        y, aux = out
        loss = (y * grad).sum() + aux.loss
    else:
        loss = (out * grad).sum()
    loss.backward()
    return time.perf_counter() - t0


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Best of ``repeats`` large tensor copies, in bytes/s (read + write counted)."""
    a = torch.randn(mib * 2**18)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * a.element_size() / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-ff", type=int, default=1024)
    ap.add_argument("--experts", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face layer")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T, d, f = args.tokens, args.d_model, args.d_ff
    x = torch.randn(1, T, d)
    bandwidth = copy_bandwidth()
    rows = []
    for E in args.experts:
        for name, k in (("switch", 1), ("gshard", 2)):
            moe = dict(num_experts=E, router=name, min_capacity=0)
            layers = {
                "dense": FFN(d, k * f),
                "ours": MoELayer.from_config(MoEConfig(**moe, dropless=True), name, d, f),
                "ours_cf": MoELayer.from_config(MoEConfig(**moe, capacity_factor_train=1.25), name, d, f),
            }
            if k == 1 and not args.no_hf:
                relu_cfg = MoEConfig(**moe, capacity_factor_train=1.25)
                layers["ours_relu"] = MoELayer.from_config(relu_cfg, name, d, f, ffn="relu")
                layers["hf"] = hf_switch_layer(d, f, E, T, 1.25)
                layers["hf_eq"] = hf_switch_layer(d, f * 3 // 2, E, T, 1.25)
            grad = torch.randn(1, T, d)
            times: dict[str, list[float]] = {n: [] for n in layers}
            for layer in layers.values():  # warm-up
                layer.train()
                fwd_bwd(layer, x, grad)
            order = list(layers)
            for _ in range(args.repeats):  # interleaved, shuffled: load drifts hit every variant alike
                random.shuffle(order)
                for n in order:
                    times[n].append(fwd_bwd(layers[n], x, grad))
            med = {n: statistics.median(v) * 1e3 for n, v in times.items()}
            row = {"router": name, "k": k, "experts": E, **{f"{n}_ms": round(v, 2) for n, v in med.items()}}
            row["ours/dense"] = round(med["ours"] / med["dense"], 3)
            row["ours_cf/dense"] = round(med["ours_cf"] / med["dense"], 3)
            traffic = 3 * (E - k) * 3 * d * f * 4  # bytes: read W twice, write dW, other experts
            row["floor/dense"] = round((med["dense"] + traffic / bandwidth * 1e3) / med["dense"], 3)
            if "hf" in med:
                row["hf/ours_relu"] = round(med["hf"] / med["ours_relu"], 2)
                row["hf_eq/ours_cf"] = round(med["hf_eq"] / med["ours_cf"], 2)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    cols = [
        "dense_ms",
        "ours_ms",
        "ours/dense",
        "floor/dense",
        "ours_cf_ms",
        "ours_cf/dense",
        "hf_ms",
        "ours_relu_ms",
    ]
    cols += ["hf/ours_relu", "hf_eq_ms", "hf_eq/ours_cf"]
    print(
        f"\nMoE layer fwd+bwd, {T} tokens, d_model {d}, d_ff {f}, {args.threads} threads, median of {args.repeats}"
    )
    print(
        "ours = dropless; ours_cf = capacity factor 1.25; hf = HF Switch (same d_ff, ReLU); "
        "ours_relu = ours with ReLU experts, cf 1.25 (hf's math); hf_eq = HF at ours_cf's FLOPs"
    )
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; floor = dense + the other experts' weight traffic")
    print(f"{'router':7} {'E':>3} " + " ".join(f"{c:>13}" for c in cols))
    for r in rows:
        cells = [
            f"{'-':>13}" if c not in r else f"{r[c]:13.3f}" if "/" in c else f"{r[c]:13.1f}" for c in cols
        ]
        print(f"{r['router']:7} {r['experts']:>3} " + " ".join(cells))
    if args.json:
        meta = dict(tokens=T, d_model=d, d_ff=f, threads=args.threads, repeats=args.repeats)
        meta["copy_bandwidth_gb_s"] = round(bandwidth / 1e9, 2)
        meta.update(torch=torch.__version__, machine=platform.machine(), processor=platform.processor())
        args.json.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
