"""Training throughput of the pipeline's ``Trainer`` and models: trainer overhead, dense vs MoE per FLOP,
eager vs compiled, 1 vs 2 processes, fraction of the machine's matmul peak (and MFU on a GPU).

    python bench/train_throughput.py [--quick] [--json PATH] [--steps N] [--repeats R]
                                     [--device cpu|cuda] [--presets tiny ...] [--batch B]

Data: packed span-corruption-shaped batches (random ids, ``tokenize.input_length`` 128 input /
``target_length`` 32 target tokens, no padding) at the pipeline's global batch (``pretrain.batch_size``,
32), through ``flanmoe.train.data.PackedBatches``. Models: params.yaml's ``model`` section with
``--presets`` as the shape and each arch of ``archs.variants`` (``dense`` is switch's FLOPs-matched
twin; ``dense_x1.5`` is the twin of the top-2 / expert-choice archs, 1.5x ``d_ff``). Trainer settings:
params.yaml's ``pretrain`` section (AdamW, grad clipping 1.0, ``log_every`` 10), no validation, no
checkpoints. tokens = input + target positions; FLOP/s = tokens/s x
``accounting(...).train_flops_per_token`` (active FLOPs: 3x forward matmul FLOPs).

Parts (one table each, with its target):
1. trainer overhead: ``Trainer.fit`` in chunks of ``log_every`` steps (sampler, micro-batch split,
   loss bookkeeping, grad clipping, scheduler, the log point's host sync and router-stat reduction)
   vs a bare step of an identical model on the same batches (forward with labels, backward, the same
   AdamW, zero_grad). Target: trainer/bare >= 0.90.
2. dense vs each MoE arch at equal FLOPs (bare steps): tokens/s, GFLOP/s, and FLOP/s relative to the
   arch's dense twin.
3. eager vs compiled: ``prepare_model`` with ``parallel.compile: true`` (per-block ``.compile()``);
   compile time = warm-up wall time minus the same number of compiled steps, with a fresh (cold)
   inductor cache unless ``--warm-compile-cache``. Archs compile in order in one process: graphs an
   earlier arch compiled (the attention blocks) are reused; the MoE layers run eager by design. A
   failed compile is reported in the table.
4. world size 1 vs 2 (CPU, gloo): one ``torchrun --standalone --nproc_per_node 2`` launch of this
   script in worker mode; rank 0 alternates (round-robin) between the 1-process, 2-thread Trainer
   (rank 1 waits in a barrier) and the 2-process, 1-thread-each Trainer (dense: FSDP 2, switch:
   EP 2), same global batch.
5. fraction of matmul peak: the peak is the best 2048x2048 fp32 matmul at the same thread count,
   probed at the start, between round-robin rounds and at the end of this run. Target: >= 60% at
   the pipeline's batch.
6. (``--device cuda`` only) bf16 autocast tokens/s and MFU (achieved FLOP/s / dense bf16 peak of the
   GPU, 989e12 for H100/H200) of ``small`` and ``base``, dense and switch. Targets: dense >= 40%,
   MoE >= 30%.

Every timed figure is the median over ``--repeats`` round-robin repeats (shuffled order, so load
drifts on a shared machine hit every variant alike) of a chunk of ``--steps`` steps, after warm-up.
Each table says how much of the CPU other processes took while it was timed (/proc/stat): above
10% its figures are flagged as unreliable.
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below)
import sys
from pathlib import Path

# Run as `python bench/x.py`: put the repo root, not bench/, first on the path (bench/tokenize.py
# would shadow the stdlib module of that name).
REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == REPO / "bench":  # run as a script, not imported
    sys.path[0] = str(REPO)

from bench.cpu import prepare_cpu

prepare_cpu()  # before torch is imported


import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

ARCHS = ["dense", "switch", "gshard", "expert_choice", "st_moe"]
GPU_PRESETS = ["small", "base"]
GPU_BATCH = 128  # the pipeline's 32 x 160 tokens leaves an H100 mostly idle
OVERHEAD_TARGET, PEAK_TARGET = 0.90, 0.60
MFU_TARGET = {"dense": 0.40, "moe": 0.30}


# ---------------------------------------------------------------------------------------- setup


def load_bench_params(preset: str):
    """params.yaml with ``model.preset = preset`` and the extra variant ``dense_x1.5`` (gshard's twin)."""
    import yaml

    from flanmoe.config import parse_params

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data.setdefault("model", {})["preset"] = preset
    variants = data.setdefault("archs", {}).setdefault("variants", {})
    if variants:  # the file lists them; else the defaults (which include these names)
        variants.setdefault("dense_x1.5", {"dense_twin_of": "gshard"})
    params = parse_params(data, "params.yaml")
    if "dense_x1.5" not in params.archs.variants:
        from flanmoe.config import ArchSpec

        params.archs.variants["dense_x1.5"] = ArchSpec(dense_twin_of="gshard")
    return params


def twin_name(params, arch: str) -> str | None:
    """The dense variant whose FFN width matches ``arch``'s FLOPs (``dense`` or ``dense_x1.5``)."""
    from flanmoe.model.flops import dense_twin

    cfg = params.arch_config(arch)
    if cfg.moe is None:
        return None
    try:
        width = dense_twin(cfg).d_ff
    except ValueError:
        return None
    for name in ("dense", "dense_x1.5"):
        if params.arch_config(name).d_ff == width:
            return name
    return None


def random_packed(n: int, enc_len: int, dec_len: int, vocab: int, seed: int):
    """``n`` packed rows shaped like span-corruption output: random ids, eos last, no padding."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(3, vocab, size=(n, enc_len), dtype=np.int32)
    y = rng.integers(3, vocab, size=(n, dec_len), dtype=np.int32)
    x[:, -1] = y[:, -1] = 1  # eos
    return datasets.Dataset.from_dict({"input_ids": x, "labels": y})


def train_config(params, batch: int, *, nproc: int = 1, ep: int = 1, compile: bool = False,
                 device: str = "cpu", dtype: str = "float32", threads: int | None = None):  # fmt: skip
    """The pipeline's ``pretrain`` TrainConfig, for benchmarking: no validation, no checkpoints."""
    from flanmoe.train.config import ParallelConfig

    par = ParallelConfig(nproc=nproc, ep=ep, compile=compile, device=device, dtype=dtype, threads=threads)
    big = 10**9
    return params.pretrain.model_copy(
        update=dict(
            batch_size=batch, steps=big, eval_every=big, checkpoint_every=big, parallel=par, grad_accum=1
        )
    )


def build(params, arch: str, vocab: int, seed: int = 0) -> torch.nn.Module:
    from flanmoe.model import build_model

    torch.manual_seed(seed)  # the same initial model everywhere (FSDP / EP ranks included)
    return build_model(params.arch_config(arch), vocab)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Runner:
    """Something that runs ``n`` training steps: ``run(n)``. ``tokens``: positions per step (global)."""

    name: str
    run: Callable[[int], None]
    tokens: int
    flops_per_token: float
    info: dict[str, Any] = field(default_factory=dict)


class BareStep:
    """Forward (the model's own CE + aux loss), backward, AdamW (the Trainer's), zero_grad: nothing else."""

    def __init__(self, model, cfg, batches, device: torch.device):
        from flanmoe.train.optim import build_optimizer

        self.model, self.batches, self.device, self.i = (
            model.train(),
            [b.to(device) for b in batches],
            device,
            0,
        )
        self.opt = build_optimizer(model.parameters(), cfg)  # AdamW foreach, as the Trainer's
        self.autocast = cfg.parallel.dtype == "bfloat16"

    def __call__(self, n: int) -> None:
        for _ in range(n):
            b = self.batches[self.i % len(self.batches)]
            self.i += 1
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                out = self.model(b.input_ids, b.attention_mask, labels=b.labels)
            out.loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


class TrainerSteps:
    """``Trainer.fit`` over the next ``n`` steps (``n`` a multiple of ``log_every``: whole log intervals)."""

    def __init__(self, trainer):
        self.trainer, self.cfg = trainer, trainer.cfg

    def __call__(self, n: int) -> None:
        t = self.trainer
        t.cfg = self.cfg.model_copy(update={"steps": t.step + n})
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            t.fit()  # its progress line per log point goes nowhere

    def warm_up(self, n: int) -> None:
        self(n)
        self.trainer.step = 0  # log points stay at multiples of log_every in the timed chunks


def make_trainer(model, cfg, sampler, dist, flops_per_token):
    from flanmoe.train.trainer import Trainer

    return Trainer(
        model, cfg, sampler, [], dist=dist, flops_per_token=flops_per_token, log_fn=lambda m, s: None
    )


def time_chunk(fn: Callable[[int], None], n: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn(n)
    sync(device)
    return time.perf_counter() - t0


def round_robin(
    runners: list[Runner], steps: int, repeats: int, device, peak: PeakProbe | None = None, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per chunk of ``steps`` steps, per runner, interleaved in shuffled order (and a matmul
    peak probe after each round)."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    order = list(runners)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for r in list(order):
            try:
                times[r.name].append(time_chunk(r.run, steps, device))
            except Exception as e:  # a compiled variant may still fail (a recompile): drop it, keep its error
                if r.name.endswith("/eager") or r.name.endswith("/trainer"):
                    raise
                print(f"{r.name} failed:\n{traceback.format_exc(limit=3)}", file=sys.stderr)
                r.info["error"] = short_error(e)
                order.remove(r)
                del times[r.name]
        if peak is not None:
            peak.probe()
    return times


class PeakProbe:
    """Best FLOP/s of an ``n x n`` fp32 matmul at ``threads`` threads, probed at the start, between the
    round-robin rounds and at the end (so that a busy moment at the start does not set the peak)."""

    def __init__(self, threads: int, n: int = 2048):
        self.threads, self.n = threads, n
        self.a, self.b, self.c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        self.best = 0.0

    def probe(self, repeats: int = 2) -> float:
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        torch.mm(self.a, self.b, out=self.c)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(self.a, self.b, out=self.c)
            self.best = max(self.best, 2 * self.n**3 / (time.perf_counter() - t0))
        torch.set_num_threads(old)
        return self.best


class CpuMeter:
    """Share of the machine's CPU time that other processes took between ``start()`` and ``stop()``
    (from /proc/stat, minus this process's and its finished children's CPU time)."""

    def __init__(self):
        self.t0 = self.busy0 = self.own0 = 0.0

    @staticmethod
    def _busy() -> float:
        try:
            f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return float("nan")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> CpuMeter:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def stop(self) -> float:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        other = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, other) / ((os.cpu_count() or 1) * wall)


def short_error(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:160]


def machine_info(threads: int, device: torch.device) -> dict[str, Any]:
    from flanmoe.env import cpu_model

    cpu = cpu_model()
    info = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        torch=torch.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_model=cpu,
        cpu_count=os.cpu_count(),
        threads=threads,
        loadavg_start=list(os.getloadavg()),
    )
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------- one preset


def bench_preset(args, preset: str, device: torch.device, peak: PeakProbe | None) -> dict[str, Any]:
    """Parts 1, 2, 3 (and the figures of 5 and 6) for one preset, all variants in one round robin."""
    from flanmoe.model.flops import accounting
    from flanmoe.train.data import PackedBatches
    from flanmoe.train.launch import prepare_model
    from flanmoe.train.trainer import Dist

    params = load_bench_params(preset)
    B, S, T, V = args.batch, args.enc_len, args.dec_len, args.vocab
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    dist = Dist(0, 1, device)
    ds = random_packed(B * 8, S, T, V, seed=0)
    batches_for = lambda: PackedBatches(ds, B, seed=0)  # noqa: E731  identical batch sequences
    sampler = batches_for()
    bare_batches = [sampler.next(1)[0] for _ in range(8)]
    tokens = B * (S + T)
    cfg = train_config(params, B, device=device.type, dtype=dtype)
    log_every = cfg.log_every
    steps = args.steps if args.steps % log_every == 0 else log_every * max(1, round(args.steps / log_every))

    archs = list(args.archs)
    variants = list(dict.fromkeys(archs + [t for a in archs if (t := twin_name(params, a))]))
    acct = {v: accounting(params.arch_config(v), V, S, T) for v in variants}
    runners: list[Runner] = []
    for v in variants:
        fpt = acct[v].train_flops_per_token
        model = prepare_model(build(params, v, V), cfg, dist)
        runners.append(Runner(f"{v}/eager", BareStep(model, cfg, bare_batches, device), tokens, fpt))
    for v in [a for a in args.trainer_archs if a in variants]:
        fpt = acct[v].train_flops_per_token
        model = prepare_model(build(params, v, V), cfg, dist)
        trainer = make_trainer(model, cfg, batches_for(), dist, fpt)
        runners.append(Runner(f"{v}/trainer", TrainerSteps(trainer), tokens, fpt))

    # warm-up: first steps pay lazy init and optimizer state
    for r in runners:
        warm = r.run.warm_up if isinstance(r.run, TrainerSteps) else r.run
        r.info["warmup_s"] = time_chunk(warm, args.warmup, device)
    compile_errors: dict[str, str] = {}
    compiled: list[Runner] = []
    ccfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"compile": True})})
    if args.compile_archs:
        # Every arch's blocks share Block.forward: room for all their graphs, or later ones run eager.
        # No dynamo reset between archs either: it would drop the compiled code of the earlier ones.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for v in [a for a in args.compile_archs if a in variants]:
        fpt = acct[v].train_flops_per_token
        before = compile_counters()
        try:
            model = prepare_model(build(params, v, V), ccfg, dist)
            r = Runner(f"{v}/compiled", BareStep(model, ccfg, bare_batches, device), tokens, fpt)
            r.info["warmup_s"] = time_chunk(r.run, args.warmup, device)
            compiled.append(r)
        except Exception as e:  # noqa: BLE001  reported in the table
            compile_errors[v] = short_error(e)
            print(f"[{preset}] compile of {v} failed:\n{traceback.format_exc(limit=3)}", file=sys.stderr)
            continue
        after = compile_counters()
        r.info.update({k: after[k] - before[k] for k in after})  # new graphs, inductor cache hits/misses
    runners += compiled
    print(
        f"[{preset}] timing {len(runners)} variants: {steps} steps x {args.repeats} repeats", file=sys.stderr
    )
    before = compile_counters()
    meter = CpuMeter().start()
    times = round_robin(runners, steps, args.repeats, device, peak)
    foreign = meter.stop()
    recompiled = compile_counters()["graphs"] - before["graphs"]  # a compile inside the timed window

    for r in [r for r in compiled if "error" in r.info]:
        compile_errors[r.name.split("/")[0]] = r.info["error"]
        compiled.remove(r)
        runners.remove(r)
    rows: dict[str, dict[str, Any]] = {}
    for r in runners:
        med = statistics.median(times[r.name])
        tps = r.tokens * steps / med
        row = dict(
            tokens_per_s=tps,
            step_ms=med / steps * 1e3,
            flops_per_s=tps * r.flops_per_token,
            train_flops_per_token=r.flops_per_token,
            chunk_s=times[r.name],
            **r.info,
        )
        if device.type == "cuda":
            row["mfu"] = row["flops_per_s"] / args.gpu_peak if args.gpu_peak else None
        rows[r.name] = row
    for r in compiled:
        rows[r.name]["compile_s"] = max(0.0, r.info["warmup_s"] - args.warmup * rows[r.name]["step_ms"] / 1e3)
    return dict(
        preset=preset,
        batch=B,
        steps=steps,
        repeats=args.repeats,
        params={v: acct[v].params for v in variants},
        active_params={v: acct[v].active_params for v in variants},
        twins={a: twin_name(params, a) for a in archs},
        rows=rows,
        compile_errors=compile_errors,
        graphs_compiled_while_timing=recompiled,
        other_processes_cpu_share=foreign,
    )


def compile_counters() -> dict[str, int]:
    """Dynamo graphs compiled so far, inductor FX-graph cache hits and misses (this process)."""
    from torch._dynamo.utils import counters

    return dict(
        graphs=counters["stats"]["unique_graphs"],
        cache_hits=counters["inductor"]["fxgraph_cache_hit"],
        cache_misses=counters["inductor"]["fxgraph_cache_miss"],
    )


# ---------------------------------------------------------------------------------------- part 4


def worker(args) -> None:
    """Under torchrun (2 processes): 1-process/2-thread Trainer on rank 0 vs 2-process Trainer, interleaved."""
    import torch.distributed as tdist

    from flanmoe.model.flops import accounting
    from flanmoe.train.data import PackedBatches
    from flanmoe.train.launch import prepare_model, setup_distributed
    from flanmoe.train.trainer import Dist

    preset = args.presets[0]
    params = load_bench_params(preset)
    B, S, T, V = args.batch, args.enc_len, args.dec_len, args.vocab
    cfg2 = train_config(params, B, nproc=2, ep=2, threads=1)
    dist = setup_distributed(cfg2.parallel)
    torch.set_num_threads(1)
    cfg1 = train_config(params, B)
    ds = random_packed(B * 8, S, T, V, seed=0)
    log_every = cfg1.log_every
    steps = args.steps if args.steps % log_every == 0 else log_every
    tokens = B * (S + T)
    runners: list[Runner] = []
    for arch in args.ws_archs:
        fpt = accounting(params.arch_config(arch), V, S, T).train_flops_per_token
        layout = "fsdp2" if params.arch_config(arch).moe is None else "ep2"
        m2 = prepare_model(build(params, arch, V), cfg2, dist)
        t2 = TrainerSteps(make_trainer(m2, cfg2, PackedBatches(ds, B, 0), dist, fpt))
        runners.append(Runner(f"{arch}/ws2", t2, tokens, fpt, {"layout": layout}))
        if dist.rank == 0:
            t1 = TrainerSteps(
                make_trainer(build(params, arch, V), cfg1, PackedBatches(ds, B, 0), Dist(), fpt)
            )
        else:
            t1 = None
        runners.append(Runner(f"{arch}/ws1", _on_rank0_2threads(t1), tokens, fpt, {"layout": "1 proc"}))
    for r in runners:  # warm-up: lazy init, optimizer state, FSDP/EP buffers
        r.run.warm_up(args.warmup)
        tdist.barrier()
    times = round_robin_dist(runners, steps, args.repeats)
    if dist.rank == 0:
        rows = {}
        for r in runners:
            med = statistics.median(times[r.name])
            tps = r.tokens * steps / med
            rows[r.name] = dict(tokens_per_s=tps, flops_per_s=tps * r.flops_per_token, step_ms=med / steps * 1e3,
                                chunk_s=times[r.name], **r.info)  # fmt: skip
        Path(args.worker_out).write_text(json.dumps(dict(preset=preset, steps=steps, rows=rows)))
    tdist.barrier()
    tdist.destroy_process_group()


class _on_rank0_2threads:
    """The world-size-1 Trainer: runs on rank 0 with 2 threads; other ranks only wait for it."""

    def __init__(self, steps: TrainerSteps | None):
        self.steps = steps

    def _wrap(self, fn: Callable[[], None]) -> None:
        import torch.distributed as tdist

        if self.steps is not None:
            torch.set_num_threads(2)
            try:
                fn()
            finally:
                torch.set_num_threads(1)
        tdist.barrier()

    def __call__(self, n: int) -> None:
        self._wrap(lambda: self.steps(n))

    def warm_up(self, n: int) -> None:
        self._wrap(lambda: self.steps.warm_up(n))


def round_robin_dist(runners: list[Runner], steps: int, repeats: int) -> dict[str, list[float]]:
    """``round_robin`` across processes: the same shuffled order everywhere, a barrier before each chunk."""
    import torch.distributed as tdist

    times: dict[str, list[float]] = {r.name: [] for r in runners}
    order = list(runners)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for r in order:
            tdist.barrier()
            t0 = time.perf_counter()
            r.run(steps)  # ws2: fit's log point all-reduces (synced); ws1: rank 0 runs, then a barrier
            times[r.name].append(time.perf_counter() - t0)
    return times


def bench_world_size(args) -> dict[str, Any]:
    """Launch the 2-process worker; returns its figures or the error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ws.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).resolve()), "--worker", "--worker-out", str(out),
               "--presets", args.presets[0], "--batch", str(args.batch), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--vocab", str(args.vocab),
               "--enc-len", str(args.enc_len), "--dec-len", str(args.dec_len), "--ws-archs", *args.ws_archs]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.worker_timeout, env=env, cwd=REPO
            )
        except subprocess.TimeoutExpired:
            return {"error": f"worker timed out after {args.worker_timeout} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            errs = [ln for ln in tail if "Error" in ln or "error" in ln]
            print(
                f"world-size worker failed (rc {proc.returncode}):\n" + "\n".join(tail[-30:]), file=sys.stderr
            )
            return {"error": (errs[-1] if errs else (tail[-1] if tail else f"rc {proc.returncode}"))[:200]}
        res = json.loads(out.read_text())
        res["launch_wall_s"] = wall
        return res


# ---------------------------------------------------------------------------------------- tables


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def header(args, res: dict[str, Any]) -> str:
    shape = f"batch {res['batch']} x ({args.enc_len} in + {args.dec_len} out)"
    return f"[{res['preset']}] {shape}, median of {res['repeats']} x {res['steps']} steps"


def contention(share: float | None) -> str:
    if share is None:
        return ""
    warn = "  WARNING: the machine was busy, figures are unreliable" if share > 0.10 else ""
    return f"   other processes took {share:.0%} of the CPU while this was timed{warn}\n"


def print_tables(
    args, results: list[dict[str, Any]], ws: dict[str, Any] | None, peak: float | None, device
) -> dict:
    verdicts: dict[str, Any] = {}
    for res in results:
        rows, preset = res["rows"], res["preset"]
        head = header(args, res)
        # 1. trainer overhead
        print(f"\n{contention(res.get('other_processes_cpu_share'))}"
              f"1. Trainer overhead {head}\n   target: trainer/bare >= {OVERHEAD_TARGET:.2f}")  # fmt: skip
        print(f"   {'arch':14} {'bare tok/s':>10} {'trainer tok/s':>13} {'trainer/bare':>12}  target")
        for a in args.trainer_archs:
            if f"{a}/trainer" not in rows:
                continue
            bare, tr = rows[f"{a}/eager"]["tokens_per_s"], rows[f"{a}/trainer"]["tokens_per_s"]
            ratio = tr / bare
            verdicts[f"{preset}/overhead/{a}"] = dict(
                value=ratio, target=OVERHEAD_TARGET, met=ratio >= OVERHEAD_TARGET
            )
            print(f"   {a:14} {bare:10.0f} {tr:13.0f} {ratio:12.3f}  {met(ratio >= OVERHEAD_TARGET)}")
        # 2. dense vs MoE
        print(f"\n2. Dense vs MoE at equal FLOPs (bare steps) {head}\n   target: none given; "
              "FLOP/s vs twin = achieved FLOP/s relative to the FLOPs-matched dense twin")  # fmt: skip
        print(f"   {'arch':14} {'params M':>8} {'GFLOP/tok':>9} {'tok/s':>8} {'GFLOP/s':>8} {'twin':>10} "
              f"{'tok/s vs twin':>13} {'FLOP/s vs twin':>14}")  # fmt: skip
        for v in list(dict.fromkeys([*args.archs, "dense_x1.5"])):
            r = rows.get(f"{v}/eager")
            if r is None:
                continue
            twin = res["twins"].get(v)
            t = rows.get(f"{twin}/eager") if twin else None
            tr = f"{r['tokens_per_s'] / t['tokens_per_s']:13.2f}" if t else f"{'-':>13}"
            fr = f"{r['flops_per_s'] / t['flops_per_s']:14.2f}" if t else f"{'-':>14}"
            print(f"   {v:14} {res['params'][v] / 1e6:8.2f} {r['train_flops_per_token'] / 1e9:9.4f} "
                  f"{r['tokens_per_s']:8.0f} {r['flops_per_s'] / 1e9:8.1f} {twin or '-':>10} {tr} {fr}")  # fmt: skip
        # 3. eager vs compiled
        print(f"\n3. Eager vs compiled (parallel.compile: per-block .compile(); compile time excluded) {head}\n"
              "   target: none given; compiled/eager > 1 = compiling pays off")  # fmt: skip
        print(f"   {'arch':14} {'eager tok/s':>11} {'compiled tok/s':>14} {'compiled/eager':>14} {'compile s':>9} "
              f"{'new graphs':>10} {'cache hit/miss':>14}")  # fmt: skip
        if not args.compile_archs:
            print("   not run (--no-compile or --compile-archs empty)")
        for v in args.compile_archs:
            if v not in res["params"]:
                continue
            e = rows[f"{v}/eager"]["tokens_per_s"]
            if v in res["compile_errors"]:
                print(f"   {v:14} {e:11.0f}  compile failed: {res['compile_errors'][v]}")
                continue
            c = rows[f"{v}/compiled"]
            print(f"   {v:14} {e:11.0f} {c['tokens_per_s']:14.0f} {c['tokens_per_s'] / e:14.2f} {c['compile_s']:9.1f} "
                  f"{c['graphs']:10d} {c['cache_hits']:>7d}/{c['cache_misses']:<6d}")  # fmt: skip
        if res["compile_errors"] or any(k.endswith("/compiled") for k in rows):
            cache = (
                "the user's (warm) inductor cache" if args.warm_compile_cache else "a fresh inductor cache"
            )
            print(
                "   (archs compile in the order listed; graphs shared with an earlier arch, e.g. attention blocks,\n"
                f"    are not compiled again; the MoE layers run eager by design; compile s: {cache})"
            )
        if res["graphs_compiled_while_timing"]:
            print(
                f"   WARNING: {res['graphs_compiled_while_timing']} graph(s) compiled inside the timed window"
            )
    if ws is not None:
        print(f"\n4. World size 1 (1 process, {args.threads} threads) vs 2 (gloo, 1 thread each), Trainer, "
              f"[{args.presets[0]}] global batch {args.batch}\n   target: none given; ws2/ws1 > 1 = 2 processes win")  # fmt: skip
        print(contention(ws.get("other_processes_cpu_share")), end="")
        if "error" in ws:
            print(f"   not measured: {ws['error']}")
        else:
            rows = ws["rows"]
            print(f"   {'arch':14} {'layout':>7} {'ws1 tok/s':>10} {'ws2 tok/s':>10} {'ws2/ws1':>8}"
                  f"   (median of {args.repeats} x {ws['steps']} steps; launch {ws['launch_wall_s']:.0f} s)")  # fmt: skip
            for a in args.ws_archs:
                r1, r2 = rows.get(f"{a}/ws1"), rows.get(f"{a}/ws2")
                if r1 and r2:
                    print(f"   {a:14} {r2['layout']:>7} {r1['tokens_per_s']:10.0f} {r2['tokens_per_s']:10.0f} "
                          f"{r2['tokens_per_s'] / r1['tokens_per_s']:8.2f}")  # fmt: skip
    for res in results:
        rows, preset = res["rows"], res["preset"]
        head = header(args, res)
        if device.type == "cpu":
            # 5. fraction of peak
            print(f"\n5. Fraction of matmul peak ({peak / 1e9:.0f} GFLOP/s: best 2048^2 fp32 matmul, "
                  f"{args.threads} threads) {head}\n   target: >= {PEAK_TARGET:.0%} at the pipeline's batch")  # fmt: skip
            print(f"   {'variant':22} {'GFLOP/s':>8} {'of peak':>8}  target")
            for name, r in rows.items():
                f = r["fraction_of_peak"]
                verdicts[f"{preset}/peak/{name}"] = dict(value=f, target=PEAK_TARGET, met=f >= PEAK_TARGET)
                print(f"   {name:22} {r['flops_per_s'] / 1e9:8.1f} {f:8.2%}  {met(f >= PEAK_TARGET)}")
        else:
            # 6. GPU MFU
            print(f"\n6. GPU bf16 autocast ({torch.cuda.get_device_name(device)}, peak {args.gpu_peak or 0:.3g} "
                  f"FLOP/s) {head}\n   target: dense >= {MFU_TARGET['dense']:.0%} MFU, MoE >= {MFU_TARGET['moe']:.0%}")  # fmt: skip
            print(f"   {'variant':22} {'tok/s':>9} {'TFLOP/s':>8} {'MFU':>6}  target")
            for name, r in rows.items():
                kind = "dense" if name.startswith("dense") else "moe"
                mfu = r.get("mfu")
                ok = None if mfu is None else mfu >= MFU_TARGET[kind]
                verdicts[f"{preset}/mfu/{name}"] = dict(value=mfu, target=MFU_TARGET[kind], met=ok)
                mfu_s = f"{mfu:6.1%}" if mfu is not None else f"{'?':>6}"
                print(
                    f"   {name:22} {r['tokens_per_s']:9.0f} {r['flops_per_s'] / 1e12:8.2f} {mfu_s}  {met(ok)}"
                )
    return verdicts


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--presets", nargs="+", default=None, help="model shapes (default: tiny; cuda: small base)"
    )
    ap.add_argument(
        "--archs", nargs="+", default=None, choices=ARCHS, help="default: all; cuda: dense switch"
    )
    ap.add_argument("--trainer-archs", nargs="*", default=["dense", "switch"], help="part 1")
    ap.add_argument(
        "--compile-archs", nargs="*", default=None, help="part 3 (default: all; --quick: dense switch)"
    )
    ap.add_argument("--ws-archs", nargs="*", default=["dense", "switch"], help="part 4")
    ap.add_argument("--no-compile", action="store_true", help="skip part 3")
    ap.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="compile with the user's inductor cache (default: a fresh one, so compile time is a cold start's)",
    )
    ap.add_argument("--no-ws", action="store_true", help="skip part 4")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"global batch (default: params.yaml pretrain.batch_size; cuda: {GPU_BATCH})",
    )
    ap.add_argument("--enc-len", type=int, default=128)
    ap.add_argument("--dec-len", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8000, help="the project tokenizer's default size")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed chunk (a multiple of log_every)")
    ap.add_argument("--repeats", type=int, default=5, help="round-robin repeats (median)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps of bare/compiled variants")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--gpu-peak", type=float, default=None, help="dense bf16 FLOP/s of the GPU (default: by name)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="2 repeats, 2 warm-up steps, compile only dense+switch"
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-timeout", type=int, default=600, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.chdir(REPO)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU visible to torch")
    if args.presets is None:
        args.presets = GPU_PRESETS if cuda else ["tiny"]
    if args.archs is None:
        args.archs = ["dense", "switch"] if cuda else list(ARCHS)
    if args.batch is None:
        args.batch = GPU_BATCH if cuda else load_bench_params(args.presets[0]).pretrain.batch_size
    if args.quick:
        args.repeats, args.warmup = 2, 2
        if args.compile_archs is None:
            args.compile_archs = ["dense", "switch"]
    if args.compile_archs is None:
        args.compile_archs = list(args.archs)
    if args.no_compile:
        args.compile_archs = []
    if args.worker:
        worker(args)
        return
    cold_cache = None
    if args.compile_archs and not args.warm_compile_cache:  # inductor reads it when it first compiles
        cold_cache = tempfile.mkdtemp(prefix="train_throughput_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold_cache
    try:
        run(args, device)
    finally:
        if cold_cache is not None:
            shutil.rmtree(cold_cache, ignore_errors=True)


def run(args, device: torch.device) -> None:
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        from flanmoe.train.meter import datasheet_peak

        name = torch.cuda.get_device_name(device)
        args.gpu_peak = args.gpu_peak or datasheet_peak(name)
    info = machine_info(args.threads, device)
    t_start = time.perf_counter()
    probe = PeakProbe(args.threads) if device.type == "cpu" else None
    if probe is not None:
        probe.probe(repeats=4)
    results = []
    for preset in args.presets:
        results.append(bench_preset(args, preset, device, probe))
    ws = None
    if device.type == "cpu" and not args.no_ws:
        meter = CpuMeter().start()
        ws = bench_world_size(args)
        ws["other_processes_cpu_share"] = meter.stop()  # includes the workers' start-up
    peak = None
    if probe is not None:
        peak = probe.probe(repeats=4)  # best of start, between rounds, end
        for res in results:
            for r in res["rows"].values():
                r["fraction_of_peak"] = r["flops_per_s"] / peak
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - t_start
    verdicts = print_tables(args, results, ws, peak, device)
    print(f"\n({info['cpu_model']}, torch {info['torch']}, {args.threads} threads; load avg "
          f"{info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}; {info['wall_s']:.0f} s)")  # fmt: skip
    if args.json:
        cfg = {k: v for k, v in vars(args).items() if k not in ("json", "worker", "worker_out")}
        out = dict(
            machine=info, config=cfg, matmul_peak_flops=peak, presets=results, world_size=ws, targets=verdicts
        )
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
