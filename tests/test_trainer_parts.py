"""The trainer loop's parts on their own: the interval meter (window means, MLflow keys and curve row,
throughput over training time only, the reductions across processes), early stopping's decisions,
the checkpoint policy (when, what, the exact resume of every part) and their state dicts."""

from __future__ import annotations

import math
import os
import socket
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from flanmoe.model.stats import RouterStats
from flanmoe.train.checkpointing import CheckpointPolicy
from flanmoe.train.early_stopping import EarlyStopping
from flanmoe.train.meter import IntervalMeter

# ------------------------------------------------------------------ the meter


def batch(inputs: int, targets: int, pad_in: int = 0, pad_tgt: int = 0) -> SimpleNamespace:
    return SimpleNamespace(num_input_tokens=inputs, num_target_tokens=targets, padded_input_tokens=pad_in,
                           padded_target_tokens=pad_tgt)  # fmt: skip


def values(lm: float, aux: float = 0.0, grad_norm: float = 1.0, lb: float = 0.0, z: float = 0.0) -> dict:
    v = {"aux": aux, "load_balance": lb, "z_loss": z, "lm_loss": lm, "grad_norm": grad_norm}
    return {k: torch.tensor(x, dtype=torch.float32) for k, x in v.items()}


def router_stats(counts: list[int], dropped: int, entropy: float) -> dict[str, RouterStats]:
    per = torch.tensor(counts)
    n = torch.tensor(sum(counts) + dropped)
    return {"encoder.1": RouterStats(
        tokens_per_expert=per, expert_fraction=per.float() / per.sum(), num_tokens=n,
        dropped_tokens=torch.tensor(dropped), dropped_assignments=torch.tensor(dropped),
        dropped_fraction=torch.tensor(dropped) / n, entropy=torch.tensor(entropy),
    )}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_reports_window_means_keys_and_throughput_over_training_time_only():
    clock = Clock()
    meter = IntervalMeter(world_size=1, flops_per_token=6.0, peak=100.0, clock=clock)
    meter.start()
    meter.count([batch(10, 4, pad_in=2, pad_tgt=0), batch(8, 6, pad_in=4, pad_tgt=0)])  # 28 tokens, 6 pads
    meter.add(values(2.0, aux=0.5, grad_norm=4.0), [])
    clock.now = 1.0
    with meter.paused():  # validation / checkpoint: 4 s that are not training time
        clock.now = 5.0
    meter.count([batch(10, 4, pad_in=2)])  # 14 tokens, 2 pads
    meter.add(values(1.0, aux=0.25, grad_norm=2.0), [])
    clock.now = 7.0
    point = meter.close(step=2, lr=0.01)
    m = point.metrics
    assert m["train/lm_loss"] == 1.5 and m["train/aux_loss"] == 0.375 and m["train/grad_norm"] == 3.0
    assert m["train/loss"] == 1.5 + 0.375 and m["train/lr"] == 0.01
    assert m["train/tokens_seen"] == 42.0 and m["train/pad_fraction"] == 8 / 50
    assert m["train/tokens_per_second"] == 42 / 3 and m["train/positions_per_second"] == 50 / 3
    assert m["train/flops_per_second"] == 50 / 3 * 6.0 and m["train/mfu"] == 50 / 3 * 6.0 / 100.0
    assert not any(k.startswith("router/") or k in ("train/load_balance_loss", "train/z_loss") for k in m)
    assert point.row == {"step": 2, "train_loss": 1.5, "val_loss": None, "lr": 0.01}  # a dense model
    assert meter.train_loss == 1.5 and meter.router == {} and meter.curve == []  # recorded by the trainer
    # the next interval starts at the close: its clock and counts
    meter.count([batch(3, 2)])
    meter.add(values(1.0), [])
    clock.now = 12.0
    assert meter.close(step=3, lr=0.01).metrics["train/tokens_per_second"] == 5 / 5


def test_meter_moe_keys_and_curve_row_with_validation():
    meter = IntervalMeter()
    meter.count([batch(4, 2)])
    meter.add(values(1.0, lb=0.5, z=0.1), [router_stats([3, 1], 0, 0.5), router_stats([1, 1], 2, 1.0)])
    point = meter.close(step=10, lr=1e-3)
    point.add_val_loss(0.75)
    meter.record(point)
    m = point.metrics
    assert m["train/load_balance_loss"] == 0.5 and m["train/z_loss"] == pytest.approx(0.1)
    # summed counts over the interval: [4, 2] kept, 2 of 8 tokens dropped
    assert m["router/encoder.1/expert_fraction/0"] == 4 / 6 and m["router/moe/dropped_fraction"] == 2 / 8
    assert m["router/moe/load_max_over_mean"] == 4 * 2 / 6 and m["val/loss"] == 0.75
    assert meter.curve == [{"step": 10, "train_loss": 1.0, "val_loss": 0.75, "lr": 1e-3,
                            "router_load_max_over_mean": 4 * 2 / 6, "router_dropped_fraction": 2 / 8,
                            "router_entropy": (0.5 * 4 + 1.0 * 4) / 8}]  # fmt: skip
    assert list(meter.router) == [k.removeprefix("router/") for k in m if k.startswith("router/")]
    # the next interval starts empty: no router statistics carried over
    meter.add(values(2.0), [])
    assert meter.close(step=11, lr=1e-3).row == {"step": 11, "train_loss": 2.0, "val_loss": None, "lr": 1e-3}


def test_meter_state_dict_round_trip_and_checkpoint_layout():
    meter = IntervalMeter()
    meter.count([batch(10, 4, pad_in=6)])
    meter.add(values(3.0), [router_stats([2, 2], 1, 0.3)])
    meter.record(meter.close(step=5, lr=0.1))
    meter.val_loss = 2.5
    state = meter.state_dict()
    assert list(state) == ["tokens_seen", "padded_seen", "curve", "last"]  # flat in the checkpoint's extra
    assert list(state["last"]) == ["train_loss", "val_loss", "router"]
    fresh = IntervalMeter()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and fresh.pad_fraction == meter.pad_fraction == 6 / 20
    state["curve"].append({"step": 6})  # the loaded meter holds its own lists
    state["padded_seen"][0] = 0
    assert len(fresh.curve) == 1 and fresh.padded_seen == [6, 20]
    # a checkpoint of older code without padded_seen / curve / last
    old = IntervalMeter()
    old.load_state_dict({"tokens_seen": 7})
    assert old.tokens_seen == 7 and old.padded_seen == [0, 0] and old.curve == []
    assert math.isnan(old.train_loss) and old.val_loss is None and old.router == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meter_worker(rank: int, port: int) -> None:
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        meter = IntervalMeter(world_size=2)
        # each process adds its share (its micro-batches' loss over the global targets, grad norm / 2)
        for lm in [1.0, 3.0] if rank == 0 else [2.0, 6.0]:
            meter.add(
                values(lm, aux=0.1 * (rank + 1), grad_norm=2.0),
                [router_stats([3 - rank, 1 + rank], rank, 0.5)],
            )
        m = meter.close(step=2, lr=1.0).metrics
        assert m["train/lm_loss"] == pytest.approx(
            (1 + 3 + 2 + 6) / 2
        )  # summed over processes, mean over steps
        assert m["train/aux_loss"] == pytest.approx(0.3) and m["train/grad_norm"] == 4.0
        # router counts summed over processes and steps: [3+3+2+2, 1+1+2+2] kept, 2 of 18 dropped
        assert m["router/encoder.1/expert_fraction/0"] == pytest.approx(10 / 16)
        assert m["router/moe/dropped_fraction"] == pytest.approx(2 / 18)
    finally:
        tdist.destroy_process_group()


def test_meter_sums_values_and_router_statistics_across_processes():
    import torch.multiprocessing as mp

    mp.spawn(_meter_worker, args=(_free_port(),), nprocs=2, join=True)


# ------------------------------------------------------------------ early stopping


def test_early_stopping_decisions_and_the_kept_model():
    weights = {"w": torch.zeros(2)}
    kept: list[dict] = []
    snapshots = []

    def snapshot():
        snapshots.append(1)
        return weights

    es = EarlyStopping(2, snapshot=snapshot, keep_best=kept.append)
    for step, loss in [(1, 3.0), (2, 2.0), (3, 2.0), (4, None), (5, 1.5), (6, 1.6)]:
        weights["w"] += 1  # training goes on in place
        es.update(loss, step)
        assert not es.should_stop, step
    assert (es.best_step, es.best_val_loss, es.bad_evals) == (5, 1.5, 1)
    es.update(1.5, 7)  # only a strictly lower loss is better
    assert es.should_stop and es.best_step == 5 and es.bad_evals == 2
    assert len(snapshots) == len(kept) == 3  # steps 1, 2, 5
    assert kept[-1]["w"].tolist() == [5.0, 5.0] and kept[0]["w"].tolist() == [1.0, 1.0]  # copies
    assert kept[-1]["w"] is not weights["w"]


def test_early_stopping_off_and_on_other_processes():
    calls = []
    off = EarlyStopping(None, snapshot=lambda: calls.append("snap") or {}, keep_best=calls.append)
    for step, loss in enumerate([3.0, 4.0, 5.0, 6.0], 1):
        off.update(loss, step)
    assert not off.should_stop and off.best_step is None and calls == []
    # another process: it takes part in the (collective) snapshot but keeps nothing
    other = EarlyStopping(
        1, snapshot=lambda: calls.append("snap") or {}, keep_best=calls.append, is_main=False
    )
    other.update(1.0, 1)
    assert calls == ["snap"] and other.best_step == 1


def test_early_stopping_state_dict_round_trip_decides_the_same():
    a = EarlyStopping(2)
    for step, loss in [(1, 2.0), (2, 1.0), (3, 1.2)]:
        a.update(loss, step)
    state = a.state_dict()
    assert state == {"val_loss": 1.0, "step": 2, "bad_evals": 1}  # the checkpoint's "best"
    b = EarlyStopping(2)
    b.load_state_dict(state)
    for es in (a, b):
        es.update(1.1, 4)
    assert a.should_stop and b.should_stop and a.state_dict() == b.state_dict()
    fresh = EarlyStopping(2)
    fresh.load_state_dict({})  # a checkpoint without "best"
    assert fresh.state_dict() == {"val_loss": math.inf, "step": None, "bad_evals": 0}


# ------------------------------------------------------------------ the checkpoint policy


class CountingSampler:
    def __init__(self) -> None:
        self.position = 0

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def policy(checkpointer, every: int = 3, world_size: int = 1) -> CheckpointPolicy:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))
    return CheckpointPolicy(checkpointer, every, model=model, optimizer=opt, scheduler=sched,
                            sampler=CountingSampler(), meter=IntervalMeter(world_size),
                            early_stopping=EarlyStopping(3), world_size=world_size)  # fmt: skip


def test_checkpoint_policy_intervals():
    p = policy(None, every=3)
    assert [s for s in range(1, 10) if p.due(s, final=False)] == [3, 6, 9]
    assert p.due(4, final=True)  # the last step, or early stopping ends the run
    p.save(3)  # no checkpointer: nothing to do
    assert p.resume() is None


def test_checkpoint_policy_resumes_every_part(tmp_path):
    from flanmoe.parallel import Checkpointer

    p = policy(Checkpointer(tmp_path, keep=2))
    assert p.resume() is None  # nothing saved yet
    for _ in range(2):  # a trained state
        p.model(torch.randn(4, 3)).sum().backward()
        p.optimizer.step()
        p.scheduler.step()
    p.sampler.position = 17
    p.meter.count([batch(5, 3, pad_in=1)])
    p.meter.add(values(0.5), [])
    p.meter.record(p.meter.close(2, lr=0.1))
    p.meter.val_loss = 1.25
    p.early_stopping.update(1.25, 2)
    extra = p.extra_state(2)
    # the layout older checkpoints have (they resume with this code)
    assert list(extra) == ["step", "scheduler", "sampler", "tokens_seen", "padded_seen", "curve", "last",
                           "best", "world_size", "rng"]  # fmt: skip
    p.save(2)
    after_save = torch.rand(3)  # the RNG stream goes on from the saved state

    q = policy(Checkpointer(tmp_path, keep=2))
    assert q.resume() == 2
    assert torch.equal(torch.rand(3), after_save)  # same world size: the RNG streams are restored
    for a, b in zip(p.model.parameters(), q.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert q.optimizer.state_dict()["state"][0]["step"] == 2
    assert q.scheduler.get_last_lr() == p.scheduler.get_last_lr()
    assert q.sampler.position == 17 and q.meter.state_dict() == p.meter.state_dict()
    assert q.early_stopping.state_dict() == p.early_stopping.state_dict()

    r = policy(Checkpointer(tmp_path, keep=2), world_size=2)  # another layout: RNG streams left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert r.resume() == 2 and r.sampler.position == 17
    assert torch.equal(torch.rand(3), expected)


def test_datasheet_peak_tells_h100_variants_apart():
    from flanmoe.train.meter import datasheet_peak

    assert datasheet_peak("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_peak("NVIDIA H100 NVL") == 835e12
    assert datasheet_peak("NVIDIA H200") == 989e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12 and datasheet_peak("NVIDIA A10") == 125e12
    assert datasheet_peak("Tesla T4") is None
