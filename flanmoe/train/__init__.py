"""Training: params (``TrainConfig``), data samplers, optimizers and schedules, the one trainer, launch.

from flanmoe.train import Trainer, TrainConfig, PackedBatches, TokenBudgetBatches
from flanmoe.train.launch import setup_distributed, prepare_model

dist = setup_distributed(cfg.parallel)                  # rank, world size, device (torchrun or not)
model = prepare_model(build_model(model_cfg, vocab), cfg, dist)   # FSDP2 + EP, compile
result = Trainer(model, cfg, PackedBatches(ds, cfg.batch_size, seed), val_batches,
                 dist=dist, checkpointer=Checkpointer(root, keep=2)).fit()
"""

from typing import TYPE_CHECKING

from flanmoe.lazy import lazy_getattr

# name -> module: imported on first use (PEP 562), so that importing one submodule (a config, say)
# does not import torch and everything else the package holds
_LAZY = {
    "Trainer": "flanmoe.train.trainer",
    "TrainConfig": "flanmoe.train.config",
    "PackedBatches": "flanmoe.train.data",
    "TokenBudgetBatches": "flanmoe.train.data",
    "ParallelConfig": "flanmoe.train.config",
    "Batch": "flanmoe.train.data",
    "eval_batches": "flanmoe.train.data",
    "split_validation": "flanmoe.train.data",
    "Dist": "flanmoe.train.trainer",
    "TrainResult": "flanmoe.train.trainer",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


if TYPE_CHECKING:
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
