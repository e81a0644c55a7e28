"""Freezing options: exactly the intended parameters stay unchanged after training steps, and the
optimizer holds no state for them; a dense model accepts only `none`."""

from __future__ import annotations

import pytest
import torch

from flanmoe.model import ModelConfig, build_model
from flanmoe.train.config import TrainConfig
from flanmoe.train.data import PackedBatches
from flanmoe.train.freeze import apply_freeze
from flanmoe.train.trainer import Trainer
from tests.test_trainer import VOCAB, micro_cfg, packed


@pytest.mark.parametrize(
    ("option", "frozen_groups"),
    [("none", set()), ("gate", {"router"}), ("experts", {"experts"}), ("non_moe", {"dense"})],
)
def test_freeze_leaves_exactly_the_intended_params_unchanged(option, frozen_groups):
    torch.manual_seed(0)
    model = build_model(micro_cfg({"router": "gshard"}), VOCAB)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    counts = apply_freeze(model, option)
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=0, log_every=3, eval_every=3,
                      checkpoint_every=3)  # fmt: skip
    trainer = Trainer(model, cfg, PackedBatches(packed(), 8, 0))
    trainer.fit()
    state_params = {id(p) for p in trainer.optimizer.state}
    n_frozen = 0
    for name, p in model.named_parameters():
        group = model.param_group(name)
        if group in frozen_groups:
            assert torch.equal(p, before[name]), name
            assert id(p) not in state_params and p.grad is None, name
            n_frozen += p.numel()
        else:
            assert not torch.equal(p, before[name]), name  # everything else trained
            assert id(p) in state_params, name
    assert counts["frozen"] == n_frozen and counts["trainable"] > 0


def test_dense_model_accepts_only_none():
    model = build_model(ModelConfig(preset=None, d_model=16, d_ff=32, num_heads=2, d_kv=8,
                                    num_encoder_layers=2, num_decoder_layers=2), VOCAB)  # fmt: skip
    assert apply_freeze(model, "none")["frozen"] == 0
    with pytest.raises(ValueError, match="^freeze: 'gate' needs an MoE arch"):
        apply_freeze(model, "gate")
