"""Early stopping: stop after ``patience`` validations without a better loss, and keep the best model.

The trainer exports the best model, not the last, when early stopping is on: on every new best
validation loss, ``snapshot()`` (the model's full state: collective under FSDP/EP, so every process
calls it) is handed, as a copy, to ``keep_best`` on the main process (the stage writes it to disk).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor


class EarlyStopping:
    """Tracks the best validation loss and the evaluations since it.

    ``patience``: evaluations without a strictly lower loss that end the run (None: never stop, keep
    nothing). ``snapshot``: the model's full state, taken on every new best; ``keep_best`` gets a copy
    of it where ``is_main`` (training goes on in place).
    """

    def __init__(
        self,
        patience: int | None,
        snapshot: Callable[[], dict[str, Tensor]] | None = None,
        keep_best: Callable[[dict[str, Tensor]], None] | None = None,
        is_main: bool = True,
    ):
        self.patience, self.snapshot, self.keep_best, self.is_main = patience, snapshot, keep_best, is_main
        self.best_val_loss = math.inf
        self.best_step: int | None = None
        self.bad_evals = 0  # evaluations since the best

    def update(self, val_loss: float | None, step: int) -> None:
        """Take the validation loss of ``step`` (None: no validation set; ignored)."""
        if self.patience is None or val_loss is None:
            return
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self.bad_evals = val_loss, step, 0
            if self.snapshot is not None:
                state = self.snapshot()  # collective
                if self.is_main and self.keep_best is not None:  # a copy: training goes on in place
                    self.keep_best({k: v.detach().clone() for k, v in state.items()})
        else:
            self.bad_evals += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"val_loss": self.best_val_loss, "step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_val_loss = state.get("val_loss", self.best_val_loss)
        self.best_step = state.get("step", self.best_step)
        self.bad_evals = state.get("bad_evals", self.bad_evals)
