"""Stop training once test accuracy reaches a target (the study's App. Table 1 control: BPTT stopped at
the bio rule's final test accuracy). The one callback that steers training, and only when asked for
(`stop_at_test_acc=`). It reads the accuracy the Generalization callback measured at this very step, so
it must come after it in the callback list."""
from __future__ import annotations

import pytorch_lightning as pl

from callbacks.history import merged_history


class StopAtTestAcc(pl.Callback):
    def __init__(self, target: float):
        self.target = float(target)
        self.stopped_at: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        points = merged_history(trainer).get("test/acc", [])
        if points and points[-1][0] == trainer.global_step and points[-1][1] >= self.target:
            self.stopped_at = trainer.global_step
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"stopped_at": self.stopped_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stopped_at = state_dict.get("stopped_at")
