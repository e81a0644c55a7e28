"""Examples/s of the evaluation library (``flanmoe.eval.scoring``) batched vs one example at a time:
multiple-choice log-likelihood scoring (``score_candidates``) and greedy generation (``generate``),
for a dense and a switch (MoE, dropless routing) model, in eval mode under no_grad (CPU).

    python bench/eval_throughput.py [--quick] [--json PATH] [--examples N] [--batch B]
                                    [--repeats R] [--archs dense switch] [--threads 2]

Inputs (random ids in [103, vocab), pad 0, eos 1; seeded, the same for every model):
- mc (MMLU-style): prompts of 40-120 tokens ending with eos, 4 candidates of 2-6 tokens each (eos
  included); one ``score_candidates`` call over all examples (the encoder runs once per prompt, its
  4 candidates go through the decoder together);
- gen (BBH-style): prompts of 30-150 tokens ending with eos, greedy decoding with the KV cache of a
  fixed ``--max-new-tokens`` (16) tokens: ``eos_id=-1``, an id the model never produces, so that no
  sequence stops early and every example costs the same decoder steps at any batch size.

Models: the ``--preset`` (tiny) shape, vocab 8000; ``switch`` with ``--experts`` (8) experts in every
2nd block and dropless routing (``MoEConfig(dropless=True)``, the evaluate stage's default), so
results do not depend on the batch. Each variant (model x workload x batch) gets one warm-up call on
the first ``--batch`` examples; the timed figure is the median over ``--repeats`` round-robin
repeats (shuffled order) of one call over all ``--examples`` examples. Target: batch ``--batch`` (32)
>= 5x the examples/s of batch 1. The table also says how far batched results agree with batch 1
(mc: max |log-prob difference| and the same argmax candidate; gen: identical sequences), and how
much of the CPU other processes took while each row was timed (/proc/stat, as in
``train_throughput.py``): above 10% its figure is flagged as unreliable.
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
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.train_throughput import CpuMeter
from flanmoe.eval.scoring import generate, score_candidates
from flanmoe.model.config import model_config_for_arch
from flanmoe.model.transformer import EOS_ID, build_model

SPEEDUP_TARGET = 5.0
BUSY = 0.10  # other processes' share of the CPU above which a figure is flagged as unreliable
FIRST_ID = 103  # random ids from here up (below: pad, eos, unk and the sentinels)
NEVER_ID = -1  # eos for generate: never produced, so every example decodes max_new_tokens tokens


def mc_inputs(n: int, vocab: int, rng: random.Random) -> tuple[list[list[int]], list[list[list[int]]]]:
    """MMLU-shaped: prompts of 40-120 tokens, 4 candidates of 2-6 tokens; all ending with eos."""

    def seq(lo: int, hi: int) -> list[int]:
        return [rng.randrange(FIRST_ID, vocab) for _ in range(rng.randint(lo, hi) - 1)] + [EOS_ID]

    prompts = [seq(40, 120) for _ in range(n)]
    return prompts, [[seq(2, 6) for _ in range(4)] for _ in range(n)]


def gen_inputs(n: int, vocab: int, rng: random.Random) -> list[list[int]]:
    """BBH-shaped: prompts of 30-150 tokens ending with eos."""
    return [
        [rng.randrange(FIRST_ID, vocab) for _ in range(rng.randint(30, 150) - 1)] + [EOS_ID] for _ in range(n)
    ]


def build(arch: str, preset: str, experts: int, vocab: int, seed: int) -> torch.nn.Module:
    cfg = model_config_for_arch(arch, preset=preset, moe={"num_experts": experts, "dropless": True})
    torch.manual_seed(seed)
    return build_model(cfg, vocab).eval()


def agreement(workload: str, batched: Any, single: Any) -> dict[str, float]:
    """How far the batched results match batch 1's (float rounding only, with dropless routing)."""
    if workload == "mc":
        diff = max(
            abs(a.logprob - b.logprob)
            for x, y in zip(batched, single, strict=True)
            for a, b in zip(x, y, strict=True)
        )
        best = [max(range(len(x)), key=lambda j: x[j].logprob) for x in batched]
        best1 = [max(range(len(y)), key=lambda j: y[j].logprob) for y in single]
        same = sum(a == b for a, b in zip(best, best1, strict=True)) / len(best)
        return {"max_abs_logprob_diff": diff, "same_argmax": same}
    return {"same_sequence": sum(a == b for a, b in zip(batched, single, strict=True)) / len(batched)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["dense", "switch"], choices=["dense", "switch"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=8000, help="the project tokenizer's default size")
    ap.add_argument("--examples", type=int, default=128, help="examples per timed call (--quick: 32)")
    ap.add_argument("--batch", type=int, default=32, help="the batched variant's batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="gen: tokens decoded per example")
    ap.add_argument("--repeats", type=int, default=5, help="round-robin repeats (median; --quick: 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="32 examples, 3 repeats: seconds")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.examples, args.repeats = 32, 3
    torch.set_num_threads(args.threads)
    N, B, V, T = args.examples, args.batch, args.vocab, args.max_new_tokens
    rng = random.Random(args.seed)
    prompts, cands = mc_inputs(N, V, rng)
    gen_prompts = gen_inputs(N, V, rng)
    load0 = os.getloadavg()
    t_start = time.perf_counter()

    # one runner per (arch, workload, batch): a call over the first n examples
    runners: dict[tuple[str, str, int], Callable[[int], Any]] = {}
    for arch in args.archs:
        model = build(arch, args.preset, args.experts, V, args.seed)
        for b in (B, 1):
            runners[(arch, "mc", b)] = lambda n, m=model, b=b: score_candidates(m, prompts[:n], cands[:n], b)
            runners[(arch, "gen", b)] = lambda n, m=model, b=b: generate(
                m, gen_prompts[:n], T, b, eos_id=NEVER_ID
            )
        # batch "0": the plain loop, every (question, option) pair alone (an encoder pass per option)
        runners[(arch, "mc", 0)] = lambda n, m=model: score_candidates(
            m,
            [p for p, cs in zip(prompts[:n], cands[:n], strict=True) for _ in cs],
            [[c] for cs in cands[:n] for c in cs],
            1,
        )
    for key, run in runners.items():  # warm-up: one batch
        run(min(B, N))
        print(f"warmed up {key}", file=sys.stderr, flush=True)
    times: dict[tuple[str, str, int], list[float]] = {k: [] for k in runners}
    shares: dict[tuple[str, str, int], list[float]] = {k: [] for k in runners}
    whole = CpuMeter().start()
    results: dict[tuple[str, str, int], Any] = {}
    order = list(runners)
    shuffle = random.Random(args.seed)
    with torch.no_grad():  # the library's functions are no_grad themselves; this covers the rest
        for rep in range(args.repeats):  # interleaved, shuffled: load drifts hit every variant alike
            shuffle.shuffle(order)
            for key in order:
                meter = CpuMeter().start()
                t0 = time.perf_counter()
                out = runners[key](N)
                times[key].append(time.perf_counter() - t0)
                shares[key].append(meter.stop())
                results.setdefault(key, out)
                print(f"repeat {rep}: {key} {times[key][-1]:.2f} s", file=sys.stderr, flush=True)

    foreign = whole.stop()
    rows = []
    for arch in args.archs:
        for workload in ("mc", "gen"):
            base = N / statistics.median(times[(arch, workload, 1)])
            for b in (0, 1, B) if workload == "mc" else (1, B):
                eps = N / statistics.median(times[(arch, workload, b)])
                row: dict[str, Any] = dict(
                    arch=arch, workload=workload, batch=b, examples_per_s=round(eps, 2)
                )
                row["speedup"] = round(eps / base, 2)
                row["seconds"] = [round(t, 3) for t in times[(arch, workload, b)]]
                row["other_processes_cpu_share"] = [round(x, 3) for x in shares[(arch, workload, b)]]
                if workload == "mc" and b == B:
                    row["speedup_vs_per_option"] = round(
                        eps * statistics.median(times[(arch, "mc", 0)]) / N, 2
                    )
                if b > 1:
                    row["target"], row["met"] = SPEEDUP_TARGET, eps / base >= SPEEDUP_TARGET
                    row.update(
                        agreement(workload, results[(arch, workload, b)], results[(arch, workload, 1)])
                    )
                rows.append(row)
    load1 = os.getloadavg()
    wall = time.perf_counter() - t_start

    print(f"\nEval throughput, {args.preset} preset (vocab {V}; switch: {args.experts} experts every 2nd block, "
          f"dropless), eval mode, no_grad, {args.threads} threads; {N} examples per call, median of {args.repeats}")  # fmt: skip
    print("mc  = MMLU-style scoring: prompts 40-120 tokens, 4 candidates of 2-6 tokens (score_candidates)")
    print(f"gen = BBH-style greedy generation, KV cache: prompts 30-150 tokens, exactly {T} new tokens per "
          f"example (eos disabled: eos_id={NEVER_ID})")  # fmt: skip
    print(f"target: batch {B} >= {SPEEDUP_TARGET:g}x the examples/s of batch 1 (mc batch 1: one question, its "
          "options together; 1/opt: the plain loop, one forward per (question, option))")  # fmt: skip
    print(
        f"{'model':7} {'workload':8} {'batch':>5} {'examples/s':>10} {'vs b1':>6} {'busy':>5}  {'target':7} agreement with b1"
    )
    for r in rows:
        if r["batch"] <= 1:
            verdict, agree = "", ""
        else:
            verdict = "met" if r["met"] else "NOT met"
            if r["workload"] == "mc":
                agree = f"max |dlogp| {r['max_abs_logprob_diff']:.1e}, same pick {r['same_argmax']:.0%}"
            else:
                agree = f"same output {r['same_sequence']:.0%}"
        busy = statistics.median(r["other_processes_cpu_share"])
        flag = "*" if busy > BUSY else " "
        if "speedup_vs_per_option" in r:
            agree += f"; {r['speedup_vs_per_option']:.1f}x the per-option loop"
        batch = "1/opt" if r["batch"] == 0 else r["batch"]
        print(f"{r['arch']:7} {r['workload']:8} {batch:>5} {r['examples_per_s']:10.1f} "
              f"{r['speedup']:5.1f}x {busy:4.0%}{flag}  {verdict:7} {agree}")  # fmt: skip
    warn = (
        f"  WARNING: the machine was busy, figures are unreliable (* = over {BUSY:.0%})"
        if foreign > BUSY
        else ""
    )
    print(f"busy = other processes' share of the CPU during the row's timed calls (median); "
          f"{foreign:.0%} over the whole timing{warn}")  # fmt: skip
    print(f"\n({platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"load avg {load0[0]:.2f} -> {load1[0]:.2f}; {wall:.0f} s)")  # fmt: skip
    if args.json:
        meta = {k: v for k, v in vars(args).items() if k != "json"}
        meta.update(eos_id=NEVER_ID, torch=torch.__version__, machine=platform.machine())
        meta.update(loadavg_start=list(load0), loadavg_end=list(load1), wall_s=round(wall, 1))
        meta["other_processes_cpu_share"] = round(foreign, 3)
        args.json.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
