"""The four parts of ``bench/gpu_check.py``: what each runs, at which sizes, and how it is timed.

Each part is ``run_<part>(plan, budget) -> {"rows": [...], "skipped": [...], ...}``; a row is one
configuration with its time and its FLOP count (``flops_*``: matmul FLOPs, ``flanmoe.model.flops``
rules; training = 3x forward). A configuration that raises (out of memory, a failed compile) becomes
a row ``{"name", "error"}`` and the part goes on.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flanmoe.model.config import MoEConfig, model_config_for_arch
from flanmoe.model.flops import accounting, forward_flops
from flanmoe.model.transformer import EOS_ID, build_model
from flanmoe.train.data import Batch
from flanmoe.train.meter import peak_flops

# a compiled configuration starts only with this much of its part's budget left (a cold compile of
# base's blocks, forward and backward; an unfinished one cannot be stopped)
COMPILE_NEEDS_S = 45.0
# micro: the quick mode's size (CPU CI) for every part
MICRO = dict(
    preset=None, d_model=64, d_ff=128, num_heads=2, d_kv=32, num_encoder_layers=2, num_decoder_layers=2
)


@dataclass
class Plan:
    """Sizes, steps and repeats of every part for one device and mode."""

    device: torch.device
    quick: bool
    dtype: str  # trainer dtype: bfloat16 autocast on GPU, float32 on CPU
    vocab: int
    enc_len: int
    dec_len: int
    # part 1: train
    train_size: str
    train_experts: int
    train_steps: int
    train_batch: int
    train_lr: float
    copy_ids: int  # the copy task's ids are drawn from [3, 3 + copy_ids)
    # part 2: throughput
    tp_sizes: list[str]
    tp_experts: int
    tp_batch: dict[str, int]  # per size: base-64e's AdamW state (58 GB) leaves room for batch 64 on an H100
    tp_modes: list[str]
    # part 3: MoE layer and training step vs HF
    layer_tokens: int
    layer_d_model: int
    layer_d_ff: int
    layer_experts: list[int]
    step_sizes: list[str]
    step_experts: int
    step_batch: int
    # part 4: eval
    eval_size: str
    eval_experts: int
    eval_examples: int
    eval_batch: int
    new_tokens: int
    # timing: steps (or calls) per timed chunk, warm-up chunks, repeats (median)
    chunk: int
    warmup: int
    repeats: int
    matmul_n: int

    @classmethod
    def make(cls, device: torch.device, quick: bool) -> Plan:
        cuda = device.type == "cuda"
        common = dict(device=device, quick=quick, dtype="bfloat16" if cuda else "float32")
        if quick:  # micro everywhere, a handful of steps, eager only
            return cls(**common, vocab=512, enc_len=32, dec_len=8,
                       train_size="micro", train_experts=4, train_steps=12, train_batch=8, train_lr=1e-2,
                       copy_ids=16, tp_sizes=["micro"], tp_experts=8, tp_batch={"micro": 8}, tp_modes=["eager"],
                       layer_tokens=256, layer_d_model=64, layer_d_ff=128, layer_experts=[8, 64],
                       step_sizes=["micro"], step_experts=8, step_batch=8,
                       eval_size="micro", eval_experts=4, eval_examples=16, eval_batch=8, new_tokens=4,
                       chunk=2, warmup=1, repeats=3, matmul_n=512)  # fmt: skip
        return cls(**common, vocab=32128, enc_len=128, dec_len=32,
                   train_size="small", train_experts=8, train_steps=200, train_batch=32, train_lr=1e-3,
                   copy_ids=256, tp_sizes=["base", "small"], tp_experts=64, tp_batch={"small": 128, "base": 64},
                   tp_modes=["eager", "compiled"] if cuda else ["eager"],
                   layer_tokens=16384, layer_d_model=768, layer_d_ff=2048, layer_experts=[8, 64],
                   step_sizes=["small", "base"], step_experts=8, step_batch=64,
                   eval_size="small", eval_experts=8, eval_examples=256, eval_batch=128, new_tokens=16,
                   chunk=5, warmup=2, repeats=5, matmul_n=8192 if cuda else 2048)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["device"] = str(self.device)
        return d

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


class Budget:
    """A part's share of the time limit: configurations start only while some is left."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = round(seconds, 1), time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def spent(self) -> bool:
        return self.left() <= 0


# ---------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn: Callable[[], Any], plan: Plan, budget: Budget, warmup: int | None = None) -> dict[str, Any]:
    """Median seconds of ``fn`` over ``plan.repeats`` (fewer once ``budget`` is spent, at least one),
    after ``warmup`` untimed calls; CUDA events on the GPU, ``perf_counter`` on CPU."""
    device = plan.device
    t0 = time.perf_counter()
    for _ in range(plan.warmup if warmup is None else warmup):
        fn()
    sync(device)
    warm_s = time.perf_counter() - t0
    times: list[float] = []
    for _ in range(plan.repeats):
        if times and budget.spent():
            break
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return dict(median_s=statistics.median(times), times_s=times, repeats=len(times), warmup_s=warm_s)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux: "5" resets the RSS high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> int:
    """Bytes: the CUDA allocator's peak (GPU) or the process's resident-set high-water mark (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def model_cfg(size: str, arch: str, experts: int, **moe: Any):
    shape = MICRO if size == "micro" else {"preset": size}
    return model_config_for_arch(arch, **shape, moe={"num_experts": experts, **moe})


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Create (and initialise) modules directly on ``device``: a 3.6B-parameter model initialises in
    a second on a GPU, in minutes on its host."""
    with torch.device(device):
        yield


def config_rows(
    names: list[str],
    budget: Budget,
    run: Callable[[str], dict[str, Any]],
    device: torch.device,
    need: Callable[[str], float] = lambda name: 0.0,
) -> dict:
    """Run each configuration while the budget lasts (``need(name)``: seconds it must still have, e.g.
    for a compile); errors become rows, the rest are skipped."""
    rows, skipped = [], []
    for name in names:
        if budget.left() <= need(name):
            skipped.append(name)
            continue
        try:
            rows.append({"name": name, **run(name)})
        except Exception as e:  # noqa: BLE001  (out of memory, a failed compile): recorded, go on
            rows.append({"name": name, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]})
        free_memory(device)
    return {"rows": rows, "skipped": skipped}


def random_batches(plan: Plan, batch: int, n: int, seed: int) -> list[Batch]:
    """``n`` packed batches of random ids in [3, vocab), eos last, no padding."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.integers(3, plan.vocab, size=(batch, plan.enc_len))
        y = rng.integers(3, plan.vocab, size=(batch, plan.dec_len))
        x[:, -1] = y[:, -1] = EOS_ID
        out.append(Batch.from_arrays(x, y))
    return out


# ---------------------------------------------------------------------------------------- 1. train


class ArrayBatches:
    """A trainer sampler over in-memory id matrices (no ``datasets``): global batches of
    ``batch_size`` consecutive rows, cycling; resumable (``state_dict``: the batch index)."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, batch_size: int):
        self.inputs, self.labels, self.batch_size, self.index = inputs, labels, batch_size, 0
        self.per_epoch = len(inputs) // batch_size

    def next(self, groups: int) -> list[Batch]:
        start = (self.index % self.per_epoch) * self.batch_size
        self.index += 1
        per = self.batch_size // groups
        return [
            Batch.from_arrays(self.inputs[start + g * per : start + (g + 1) * per], self.labels[start + g * per : start + (g + 1) * per])
            for g in range(groups)
        ]  # fmt: skip

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = int(state["index"])


def copy_task(n: int, plan: Plan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs: random ids in [3, 3 + copy_ids), eos last; targets: the first ``dec_len - 1`` input ids
    and eos. The loss falls fast (first the id distribution, then the copy)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(3, 3 + plan.copy_ids, size=(n, plan.enc_len))
    x[:, -1] = EOS_ID
    y = np.concatenate([x[:, : plan.dec_len - 1], np.full((n, 1), EOS_ID)], axis=1)
    return x, y


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max(float((a[k].float().cpu() - b[k].float().cpu()).abs().max()) for k in a)


def optimizer_diff(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> float:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    if sa.keys() != sb.keys():
        return math.inf
    return max(
        (float((sa[i][k].float() - sb[i][k].float()).abs().max()) for i in sa for k in sa[i]), default=0.0
    )


def train_one(plan: Plan, arch: str) -> dict[str, Any]:
    from flanmoe.eval.scoring import generate, score_candidates
    from flanmoe.model.pretrained import load_pretrained, save_pretrained
    from flanmoe.parallel.checkpoint import Checkpointer
    from flanmoe.train.config import ParallelConfig, TrainConfig
    from flanmoe.train.launch import prepare_model
    from flanmoe.train.trainer import Dist, Trainer, state_dict_for_export

    cfg = model_cfg(plan.train_size, arch, plan.train_experts)
    V, S, T, N, B = plan.vocab, plan.enc_len, plan.dec_len, plan.train_steps, plan.train_batch
    x, y = copy_task(B * 16, plan, seed=0)
    xv, yv = copy_task(max(B, 16), plan, seed=1)
    tcfg = TrainConfig(steps=N, batch_size=B, lr=plan.train_lr, schedule="constant", warmup_steps=N // 10,
                       log_every=max(1, N // 10), eval_every=N, checkpoint_every=N, keep_checkpoints=1, seed=0,
                       parallel=ParallelConfig(device=plan.device.type, dtype=plan.dtype))  # fmt: skip
    dist = Dist(0, 1, plan.device)
    acct = accounting(cfg, V, S, T)

    def build(seed: int):
        torch.manual_seed(seed)
        with on_device(plan.device):
            return prepare_model(build_model(cfg, V), tcfg, dist)

    def trainer(model, ckpt):
        return Trainer(model, tcfg, ArrayBatches(x, y, B), [Batch.from_arrays(xv, yv)], dist=dist,
                       checkpointer=ckpt, log_fn=lambda m, s: None, flops_per_token=acct.train_flops_per_token)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ckpt = Checkpointer(Path(tmp) / "ckpt", keep=1)
        model = build(0)
        tr = trainer(model, ckpt)
        sync(plan.device)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's progress lines
            result = tr.fit()
        sync(plan.device)
        fit_s = time.perf_counter() - t0
        losses = [p["train_loss"] for p in result.curve]
        # resume: a model of another seed loads the checkpoint of the last step
        trained = state_dict_for_export(model)
        other = build(1)
        tr2 = trainer(other, ckpt)
        resumed_step = tr2.maybe_resume()
        resume_diff = max_abs_diff(trained, state_dict_for_export(other))
        opt_diff = optimizer_diff(tr.optimizer, tr2.optimizer)
        del other, tr2
        # export, load, evaluate (dropless routing, as the evaluate stage)
        path = save_pretrained(model, Path(tmp) / "export", state_dict=trained)
        overrides = {"dropless": True} if cfg.moe is not None else None
        loaded = load_pretrained(path, device=plan.device, moe_overrides=overrides).eval()
        export_diff = max_abs_diff(trained, loaded.state_dict())
        prompts, targets = [list(r) for r in xv], [list(r) for r in yv]
        t1 = time.perf_counter()
        with plan.autocast:
            gen = generate(loaded, prompts, max_new_tokens=T, batch_size=len(prompts))
            rng = random.Random(0)
            cands, answers = [], []
            for i, t in enumerate(targets):  # the target among 3 other rows' targets
                others = [targets[j] for j in rng.sample([j for j in range(len(targets)) if j != i], 3)]
                answers.append(rng.randrange(4))
                cands.append(others[: answers[-1]] + [t] + others[answers[-1] :])
            scores = score_candidates(loaded, prompts, cands, batch_size=len(prompts))
        eval_s = time.perf_counter() - t1
    hits = [g[j] == t[j] for g, t in zip(gen, targets, strict=True) for j in range(T - 1) if j < len(g)]
    picks = [max(range(4), key=lambda j: s[j].logprob) for s in scores]
    return dict(
        arch=arch,
        size=plan.train_size,
        steps=result.steps,
        batch=B,
        flops_per_token=acct.train_flops_per_token,
        flops_per_step=acct.train_flops_per_token * B * (S + T),
        fit_s=round(fit_s, 3),
        tokens_per_s=result.throughput.get("tokens_per_second"),
        mfu=result.throughput.get("mfu"),
        loss_curve=[round(v, 4) for v in losses],
        loss_first=losses[0],
        loss_last=losses[-1],
        loss_fell=losses[-1] < 0.9 * losses[0],
        val_loss=result.val_loss,
        resumed_step=resumed_step,
        resume_max_abs_diff=resume_diff,
        resume_optimizer_max_abs_diff=opt_diff,
        resume_equal=resumed_step == N and resume_diff == 0.0 and opt_diff == 0.0,
        export_max_abs_diff=export_diff,
        gen_token_accuracy=sum(hits) / max(1, (T - 1) * len(targets)),
        mc_accuracy=sum(p == a for p, a in zip(picks, answers, strict=True)) / len(answers),
        eval_examples=len(prompts),
        eval_s=round(eval_s, 3),
    )


def run_train(plan: Plan, budget: Budget) -> dict[str, Any]:
    return config_rows(["dense", "switch"], budget, lambda arch: train_one(plan, arch), plan.device)


# ---------------------------------------------------------------------------------------- 2. throughput


def datasheet_peak(plan: Plan) -> float | None:
    """The card's datasheet bf16 peak (flanmoe.train.meter.PEAK_FLOPS, as the trainer's MFU uses)."""
    return peak_flops(plan.device, plan.dtype)


def matmul_peak(plan: Plan, budget: Budget) -> dict[str, Any]:
    """FLOP/s of an ``n x n`` matmul in the training dtype (bf16 on GPU), 10 per timed chunk."""
    n, dtype = plan.matmul_n, torch.bfloat16 if plan.dtype == "bfloat16" else torch.float32
    a, b = (torch.randn(n, n, device=plan.device, dtype=dtype) for _ in range(2))
    c = torch.empty_like(a)

    def chunk() -> None:
        for _ in range(10):
            torch.mm(a, b, out=c)

    t = timed(chunk, plan, budget, warmup=2)
    flops = 10 * 2 * n**3
    return dict(n=n, dtype=str(dtype), flops_per_chunk=flops, median_s=t["median_s"],
                flops_per_s=flops / t["median_s"], best_flops_per_s=flops / min(t["times_s"]))  # fmt: skip


def throughput_one(plan: Plan, name: str, budget: Budget, peaks: dict[str, float | None]) -> dict[str, Any]:
    from bench.train_throughput import BareStep
    from flanmoe.train.config import ParallelConfig, TrainConfig
    from flanmoe.train.launch import prepare_model
    from flanmoe.train.trainer import Dist

    size, arch, mode = name.split("/")
    cfg = model_cfg(size, arch, plan.tp_experts)
    B, S, T, V = plan.tp_batch[size], plan.enc_len, plan.dec_len, plan.vocab
    par = ParallelConfig(device=plan.device.type, dtype=plan.dtype, compile=mode == "compiled")
    tcfg = TrainConfig(steps=1000, batch_size=B, warmup_steps=0, parallel=par)
    reset_peak_memory(plan.device)
    torch.manual_seed(0)
    with on_device(plan.device):
        model = prepare_model(build_model(cfg, V), tcfg, Dist(0, 1, plan.device))
    step = BareStep(model, tcfg, random_batches(plan, B, 4, seed=0), plan.device)
    t = timed(lambda: step(plan.chunk), plan, budget)
    acct = accounting(cfg, V, S, T)
    tokens = B * (S + T)
    step_s = t["median_s"] / plan.chunk
    flops_per_s = acct.train_flops_per_token * tokens / step_s
    peak, measured = peaks["datasheet"], peaks["matmul"]
    return dict(
        size=size, arch=arch, mode=mode, experts=cfg.moe.num_experts if cfg.moe else 0, batch=B,
        tokens_per_step=tokens, params=acct.params, flops_per_token=acct.train_flops_per_token,
        flops_per_step=acct.train_flops_per_token * tokens, step_s=step_s, tokens_per_s=tokens / step_s,
        tflops_per_s=flops_per_s / 1e12, mfu_datasheet=flops_per_s / peak if peak else None,
        mfu_matmul=flops_per_s / measured if measured else None, peak_memory_bytes=peak_memory(plan.device),
        warmup_s=t["warmup_s"], repeats=t["repeats"], times_s=t["times_s"],
    )  # fmt: skip


def run_throughput(plan: Plan, budget: Budget) -> dict[str, Any]:
    mm = matmul_peak(plan, budget)
    peaks = {"datasheet": datasheet_peak(plan), "matmul": mm["best_flops_per_s"]}
    if "compiled" in plan.tp_modes:  # every arch's blocks share Block.forward: room for all their graphs
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    names = [f"{s}/{a}/{m}" for m in plan.tp_modes for s in plan.tp_sizes for a in ("dense", "switch")]
    run = lambda n: throughput_one(plan, n, budget, peaks)  # noqa: E731
    need = lambda n: COMPILE_NEEDS_S if n.endswith("/compiled") else 0.0  # noqa: E731
    out = config_rows(names, budget, run, plan.device, need)
    return {"matmul": mm, "datasheet_peak_flops": peaks["datasheet"], **out}


# ---------------------------------------------------------------------------------------- 3. MoE layer


def layer_one(plan: Plan, name: str, budget: Budget) -> dict[str, Any]:
    from bench.moe_layer import hf_switch_layer
    from flanmoe.model.layers import FFN
    from flanmoe.model.moe import MoELayer

    kind, E = name.split("/E")[0], int(name.split("/E")[1])
    tok, d, f = plan.layer_tokens, plan.layer_d_model, plan.layer_d_ff
    moe = dict(num_experts=E, router="switch", min_capacity=0)
    torch.manual_seed(0)
    with on_device(plan.device):
        if kind == "dense":  # gated GELU, d_ff: the active FLOPs of a top-1 layer
            layer, m = FFN(d, f), 3
        elif kind == "ours":  # dropless: every token through its expert
            layer, m = MoELayer.from_config(MoEConfig(**moe, dropless=True), "switch", d, f), 3
        elif kind == "ours_relu":  # HF's math: ReLU experts, capacity factor 1.25
            layer = MoELayer.from_config(
                MoEConfig(**moe, capacity_factor_train=1.25), "switch", d, f, ffn="relu"
            )
            m = 2
        else:
            layer, m = hf_switch_layer(d, f, E, tok, 1.25), 2
        x = torch.randn(1, tok, d)
        grad = torch.randn(1, tok, d)
    layer.train()

    def fwd_bwd() -> None:
        for _ in range(plan.chunk):
            for p in layer.parameters():
                p.grad = None
            xi = x.detach().requires_grad_()
            with plan.autocast:
                out = layer(xi)
            y, aux = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
            loss = (y.float() * grad).sum() + (aux.loss if hasattr(aux, "loss") else 0.0)
            loss.backward()

    t = timed(fwd_bwd, plan, budget)
    flops = 3 * tok * (2 * m * d * f + (2 * d * E if kind != "dense" else 0))  # fwd + bwd = 3x fwd
    ms = t["median_s"] / plan.chunk * 1e3
    return dict(kind=kind, experts=E, tokens=tok, d_model=d, d_ff=f, flops=flops, ms=ms,
                tflops_per_s=flops / ms / 1e9, repeats=t["repeats"])  # fmt: skip


def step_one(plan: Plan, name: str, budget: Budget) -> dict[str, Any]:
    from bench.train_step import hf_model, optimizer_step

    size, which = name.split("/")[1:]
    V, S, T, B = plan.vocab, plan.enc_len, plan.dec_len, plan.step_batch
    cfg = model_cfg(size, "switch", plan.step_experts).model_copy(update={"ffn": "relu"})  # HF's math
    torch.manual_seed(0)
    with on_device(plan.device):
        model = (hf_model(cfg, V, S, T) if which == "hf" else build_model(cfg, V)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # the same optimizer for both
    x, y = (b.to(plan.device) for b in [torch.randint(3, V, (B, S)), torch.randint(3, V, (B, T))])

    def steps() -> None:
        for _ in range(plan.chunk):
            optimizer_step(model, opt, x, y, which == "hf", plan.autocast)

    reset_peak_memory(plan.device)
    t = timed(steps, plan, budget)
    acct = accounting(cfg, V, S, T)
    step_s = t["median_s"] / plan.chunk
    flops = acct.train_flops_per_token * B * (S + T)
    return dict(model=which, size=size, experts=plan.step_experts, batch=B, flops_per_step=flops,
                ms=step_s * 1e3, tokens_per_s=B * (S + T) / step_s, tflops_per_s=flops / step_s / 1e12,
                peak_memory_bytes=peak_memory(plan.device), repeats=t["repeats"])  # fmt: skip


def run_moe_layer(plan: Plan, budget: Budget) -> dict[str, Any]:
    layer_names = [f"{k}/E{E}" for E in plan.layer_experts for k in ("dense", "ours", "ours_relu", "hf")]
    step_names = [f"step/{s}/{w}" for s in plan.step_sizes for w in ("ours", "hf")]  # one model at a time
    run = lambda n: step_one(plan, n, budget) if n.startswith("step/") else layer_one(plan, n, budget)  # noqa: E731
    out = config_rows(layer_names + step_names, budget, run, plan.device)
    by = {r["name"]: r for r in out["rows"] if "error" not in r}
    for r in out["rows"]:  # ratios of times: ours/dense (target <= 1.25 at E=64), hf/ours (faster > 1)
        n = r["name"]
        if n.startswith("ours/") and n.replace("ours", "dense") in by and "ms" in r:
            r["ratios"] = {"ours/dense": r["ms"] / by[n.replace("ours", "dense")]["ms"]}
        if n.startswith("hf/") and n.replace("hf", "ours_relu") in by and "ms" in r:
            r["ratios"] = {"hf/ours_relu": r["ms"] / by[n.replace("hf", "ours_relu")]["ms"]}
        if n.startswith("step/") and n.endswith("/hf") and n[:-3] + "/ours" in by and "ms" in r:
            r["ratios"] = {"hf/ours": r["ms"] / by[n[:-3] + "/ours"]["ms"]}
    return out


# ---------------------------------------------------------------------------------------- 4. eval


def eval_one(plan: Plan, name: str, budget: Budget, inputs: dict[str, Any]) -> dict[str, Any]:
    from bench.eval_throughput import NEVER_ID
    from flanmoe.eval.scoring import generate, score_candidates

    arch, workload = name.split("/")
    cfg = model_cfg(plan.eval_size, arch, plan.eval_experts, dropless=True)
    V, N = plan.vocab, plan.eval_examples
    torch.manual_seed(0)
    with on_device(plan.device):
        model = build_model(cfg, V).eval()
    prompts, cands, gen_prompts = inputs["prompts"], inputs["cands"], inputs["gen_prompts"]
    mean = lambda xs: sum(map(len, xs)) / len(xs)  # noqa: E731
    if workload == "mc":  # the encoder once per prompt, the decoder per candidate
        fn = lambda: score_candidates(model, prompts, cands, plan.eval_batch)  # noqa: E731
        P, C = mean(prompts), mean([c for cs in cands for c in cs])
        enc = sum(forward_flops(cfg, V, round(P), 0).values())
        per_example = enc + 4 * (sum(forward_flops(cfg, V, round(P), round(C)).values()) - enc)
    else:  # greedy with the KV cache, new_tokens per example (eos never produced)
        fn = lambda: generate(model, gen_prompts, plan.new_tokens, plan.eval_batch, eos_id=NEVER_ID)  # noqa: E731
        per_example = sum(forward_flops(cfg, V, round(mean(gen_prompts)), plan.new_tokens).values())
    with plan.autocast:
        t = timed(fn, plan, budget, warmup=1)
    return dict(arch=arch, workload=workload, examples=N, batch=plan.eval_batch, ms=t["median_s"] * 1e3,
                examples_per_s=N / t["median_s"], flops_per_example_approx=per_example,
                tflops_per_s=per_example * N / t["median_s"] / 1e12, repeats=t["repeats"])  # fmt: skip


def run_eval(plan: Plan, budget: Budget) -> dict[str, Any]:
    from bench.eval_throughput import gen_inputs, mc_inputs

    rng = random.Random(0)
    prompts, cands = mc_inputs(plan.eval_examples, plan.vocab, rng)
    inputs = dict(prompts=prompts, cands=cands, gen_prompts=gen_inputs(plan.eval_examples, plan.vocab, rng))
    names = [f"{a}/{w}" for a in ("dense", "switch") for w in ("gen", "mc")]
    return config_rows(names, budget, lambda n: eval_one(plan, n, budget, inputs), plan.device)


RUNNERS: dict[str, Callable[[Plan, Budget], dict[str, Any]]] = {
    "train": run_train,
    "throughput": run_throughput,
    "moe_layer": run_moe_layer,
    "eval": run_eval,
}
