"""The trainer in one process: schedules, loss normalisation across micro-batches, resume from a
checkpoint bit for bit, learning on a tiny set, and MLflow failures that never stop training."""

from __future__ import annotations

import math
import warnings

import datasets
import numpy as np
import pytest
import torch

from flanmoe.model import ModelConfig, MoEConfig, build_model
from flanmoe.train.config import TrainConfig
from flanmoe.train.data import PackedBatches, eval_batches
from flanmoe.train.optim import lr_factor
from flanmoe.train.trainer import Trainer

VOCAB = 64


def micro_cfg(moe: dict | None = None) -> ModelConfig:
    return ModelConfig(
        preset=None, d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=2, num_decoder_layers=2,
        moe=None if moe is None else MoEConfig(num_experts=4, **moe),
    )  # fmt: skip


def packed(n: int = 48, seed: int = 0) -> datasets.Dataset:
    """Packed-like rows: 12 input ids, 6 labels with some padding, from a learnable rule."""
    rng = np.random.default_rng(seed)
    x = rng.integers(3, VOCAB, size=(n, 12))
    y = np.zeros((n, 6), dtype=np.int64)
    y[:, :4] = (x[:, :4] + 1) % VOCAB  # the target is the input shifted: learnable
    y[:, 4] = 1  # eos
    y[: n // 2, 3:] = 0  # half the rows are padded
    y[: n // 2, 3] = 1
    return datasets.Dataset.from_dict({"input_ids": x.astype(np.int32), "labels": y.astype(np.int32)})


def train_cfg(**over) -> TrainConfig:
    base = dict(steps=4, batch_size=8, lr=3e-3, warmup_steps=1, log_every=2, eval_every=2, checkpoint_every=2)
    base.update(over)
    return TrainConfig(**base)


def run(model_cfg: ModelConfig, cfg: TrainConfig, checkpointer=None, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(model_cfg, VOCAB)
    ds = packed()
    trainer = Trainer(model, cfg, PackedBatches(ds, cfg.batch_size, seed), eval_batches(ds.select(range(8)), 8),
                      checkpointer=checkpointer)  # fmt: skip
    return model, trainer.fit()


def test_schedules():
    cfg = train_cfg(steps=100, warmup_steps=10, schedule="inverse_sqrt")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(39, cfg) == pytest.approx(math.sqrt(10 / 40))  # T5's 1/sqrt(step) after warmup
    cos = train_cfg(steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(10, cos) == pytest.approx(1.0) and lr_factor(100, cos) == pytest.approx(0.1)
    assert 0.1 < lr_factor(55, cos) < 1.0
    assert lr_factor(50, train_cfg(steps=100, warmup_steps=0, schedule="constant")) == 1.0


def test_grad_accum_equals_one_big_batch_for_dense():
    # loss = sum of token CE / tokens of the whole global batch: accumulation changes nothing
    a, ra = run(micro_cfg(), train_cfg(grad_accum=1))
    b, rb = run(micro_cfg(), train_cfg(grad_accum=4))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    assert ra.train_loss == pytest.approx(rb.train_loss, rel=1e-5)


# Adafactor's step is relative to the parameter's RMS (~0.25 here): it needs a larger lr
@pytest.mark.parametrize(("optimizer", "lr"), [("adamw", 1e-2), ("adafactor", 5e-2)])
def test_learns_a_tiny_task(optimizer, lr):
    cfg = train_cfg(steps=60, batch_size=16, lr=lr, optimizer=optimizer, log_every=10, eval_every=60,
                    checkpoint_every=60)  # fmt: skip
    _, res = run(micro_cfg({"router": "switch"}), cfg)
    first, last = res.curve[0]["train_loss"], res.curve[-1]["train_loss"]
    assert last < 0.7 * first, res.curve
    assert res.val_loss is not None and res.router["moe/dropped_fraction"] >= 0


def test_resume_from_checkpoint_is_bit_exact(tmp_path):
    from flanmoe.parallel import Checkpointer

    moe = micro_cfg({"router": "gshard"})
    full, res_full = run(moe, train_cfg(steps=6), Checkpointer(tmp_path / "full", keep=3))
    # the same run, stopped after step 4 (its checkpoint), then resumed by a fresh trainer
    run(moe, train_cfg(steps=4), Checkpointer(tmp_path / "part", keep=3))
    resumed, res = run(moe, train_cfg(steps=6), Checkpointer(tmp_path / "part", keep=3))
    assert res.resumed_from == 4
    for (name, pa), pb in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert res.curve == res_full.curve and res.tokens_seen == res_full.tokens_seen


def test_tracking_failure_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    import mlflow

    from flanmoe import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise ConnectionError("tracking server gone")

    with tracking.start_run("t", "exp") as run_:
        monkeypatch.setattr(mlflow, "log_metrics", broken)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = train_cfg(steps=4, log_every=1)
            torch.manual_seed(0)
            trainer = Trainer(build_model(micro_cfg(), VOCAB), cfg, PackedBatches(packed(), 8, 0),
                              log_fn=run_.log_metrics)  # fmt: skip
            res = trainer.fit()
    assert res.steps == 4 and len(calls) == 1  # the first failure turns logging off
    assert sum("MLflow logging failed" in str(w.message) for w in caught) == 1


def _trained_with(parallel: dict, steps: int = 3) -> list[float]:
    from flanmoe.train.launch import prepare_model
    from flanmoe.train.trainer import Dist

    cfg = train_cfg(steps=steps, log_every=1, parallel=parallel)
    torch.manual_seed(0)
    model = prepare_model(build_model(micro_cfg({"router": "gshard"}), VOCAB), cfg, Dist())
    res = Trainer(model, cfg, PackedBatches(packed(), cfg.batch_size, 0)).fit()
    return [p["train_loss"] for p in res.curve]


def test_activation_checkpointing_in_one_process_matches_eager():
    eager = _trained_with({})
    assert _trained_with({"activation_checkpointing": True}) == pytest.approx(eager, rel=1e-5)


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(monkeypatch):
    # the stage's compile path (per block); aot_eager keeps the test quick (inductor: test_compile.py)
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend="aot_eager"))
    torch._dynamo.reset()
    eager = _trained_with({})
    assert _trained_with({"compile": True}) == pytest.approx(eager, rel=1e-4)
    torch._dynamo.reset()


def test_loss_is_on_target_tokens_only():
    # instruction pairs: the encoder reads the inputs, only non-padding targets carry loss
    from flanmoe.train.data import Batch
    from flanmoe.train.trainer import forward_batch

    torch.manual_seed(0)
    model = build_model(micro_cfg(), VOCAB).eval()
    inputs = np.array([[5, 6, 7, 1, 0, 0], [8, 9, 1, 0, 0, 0]])
    labels = np.array([[10, 11, 1], [12, 1, 0]])  # the second target is padded
    batch = Batch.from_arrays(inputs, labels)
    assert batch.num_target_tokens == 5 and (batch.labels == -100).sum() == 1
    ce_sum, out = forward_batch(model, batch)
    logp = torch.log_softmax(out.logits, -1)
    manual = -sum(logp[b, t, labels[b, t]] for b in range(2) for t in range(3) if labels[b, t] != 0)
    torch.testing.assert_close(ce_sum, manual)


def test_early_stopping_keeps_the_best_model():
    ds = packed()
    kept: list[tuple[int, dict]] = []
    cfg = train_cfg(steps=40, lr=3.0, warmup_steps=0, eval_every=1, log_every=1, checkpoint_every=40,
                    early_stopping_patience=2, clip_grad_norm=None)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(micro_cfg(), VOCAB)
    trainer = Trainer(model, cfg, PackedBatches(ds, 8, 0), eval_batches(ds.select(range(8)), 8),
                      keep_best=lambda state: kept.append((trainer.step, state)))  # fmt: skip
    res = trainer.fit()  # lr 3.0 diverges: validation stops improving
    assert res.stopped_early and res.steps < 40
    assert res.best_step == kept[-1][0] and res.steps == res.best_step + 2  # patience 2
    vals = {p["step"]: p["val_loss"] for p in res.curve if p["val_loss"] is not None}
    assert vals[res.best_step] == min(vals.values())
    best_state = kept[-1][1]
    assert any(not torch.equal(best_state[n], p.detach()) for n, p in model.named_parameters())


class _RecordingCheckpointer:
    """Records the steps saved; nothing to resume."""

    def __init__(self) -> None:
        self.saved: list[int] = []

    def latest(self):
        return None

    def save(self, step, model, optimizer, extra) -> None:
        self.saved.append(step)


def test_fit_interleaves_log_points_validation_and_checkpoints():
    # log every 3, validate every 2, checkpoint every 4, 7 steps: the last step does all three
    ds = packed()
    logged: list[tuple[int, list[str]]] = []
    ckpt = _RecordingCheckpointer()
    cfg = train_cfg(steps=7, log_every=3, eval_every=2, checkpoint_every=4)
    torch.manual_seed(0)
    trainer = Trainer(build_model(micro_cfg({"router": "switch"}), VOCAB), cfg, PackedBatches(ds, 8, 0),
                      eval_batches(ds.select(range(8)), 8), checkpointer=ckpt,
                      log_fn=lambda m, s: logged.append((s, sorted(m))))  # fmt: skip
    res = trainer.fit()
    assert [s for s, _ in logged] == [2, 3, 4, 6, 7] and ckpt.saved == [4, 7]
    assert logged[0][1] == ["val/loss"] and logged[2][1] == ["val/loss"]  # validation between log points
    assert "val/loss" not in logged[1][1] and "train/lm_loss" in logged[1][1]
    assert "val/loss" in logged[3][1] and "router/moe/entropy" in logged[4][1]
    assert [(p["step"], p["val_loss"] is None) for p in res.curve] == [(3, True), (6, False), (7, False)]
    assert res.val_loss == res.curve[-1]["val_loss"] and res.train_loss == res.curve[-1]["train_loss"]
    assert set(res.throughput) == {"tokens_per_second", "positions_per_second"}  # no FLOPs given
