"""Training: params (``TrainConfig``), data samplers, optimizers and schedules, the one trainer, launch.

from flanmoe.train import Trainer, TrainConfig, PackedBatches, TokenBudgetBatches
from flanmoe.train.launch import setup_distributed, prepare_model

dist = setup_distributed(cfg.parallel)                  # rank, world size, device (torchrun or not)
model = prepare_model(build_model(model_cfg, vocab), cfg, dist)   # FSDP2 + EP, compile
result = Trainer(model, cfg, PackedBatches(ds, cfg.batch_size, seed), val_batches,
                 dist=dist, checkpointer=Checkpointer(root, keep=2)).fit()
"""

from flanmoe.train.config import ParallelConfig, TrainConfig
from flanmoe.train.data import Batch, PackedBatches, TokenBudgetBatches, eval_batches, split_validation
from flanmoe.train.trainer import Dist, Trainer, TrainResult

__all__ = [
    "Batch",
    "Dist",
    "PackedBatches",
    "ParallelConfig",
    "TokenBudgetBatches",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "eval_batches",
    "split_validation",
]
