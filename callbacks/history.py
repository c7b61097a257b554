"""Measurement histories: {metric: [[step, value], ...]} kept as callback state (saved in checkpoints)."""
from __future__ import annotations

import math

import pytorch_lightning as pl

from callbacks.timing import Timed


def merged_history(trainer) -> dict[str, list[list[float]]]:
    """Every measurement callback's history in one dict (each metric key belongs to one callback)."""
    merged: dict = {}
    for cb in trainer.callbacks:
        merged.update(getattr(cb, "history", None) or {})
    return merged


class HistoryCallback(Timed, pl.Callback):
    """Base for measurement callbacks: records values, logs them with self.log, survives resume.

    Subclasses implement measure(trainer, pl_module, batch) -> {key: value} (slash-namespaced keys) and
    set `every_n_steps` (0 disables the periodic measurement). phase "after": the weights after step k
    are measured at k = 0, every_n_steps, ... and the final step. phase "before": the weights and batch
    *of* step k, before its update (what a rule's estimate at step k saw), at k = 0, every_n_steps, ...
    """

    every_n_steps: int = 0
    phase: str = "after"
    stopping: bool = False

    def __init__(self):
        self.history: dict[str, list[list[float]]] = {}
        self.measured_steps: list[int] = []

    # ----- when ---------------------------------------------------------------------------------------
    def due(self, step: int, max_steps: int) -> bool:
        if step in self.measured_steps:
            return False
        if step == 0 or (self.phase == "after" and (step >= max_steps or self.stopping)):
            return True
        return self.every_n_steps > 0 and step % self.every_n_steps == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.phase == "before" or trainer.global_step == 0:
            self.run(trainer, pl_module, batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if getattr(trainer, "rulescape_rewind", False):
            return  # the stop goes back to its last check and trains this step again (stop_at_target.py)
        self.stopping = bool(trainer.should_stop)  # an early stop makes this step the final one
        if self.phase == "after":
            self.run(trainer, pl_module, batch)

    # ----- what ---------------------------------------------------------------------------------------
    def measure(self, trainer, pl_module, batch) -> dict[str, float]:
        raise NotImplementedError

    def run(self, trainer, pl_module, batch=None) -> None:
        step = trainer.global_step
        if not self.due(step, trainer.max_steps):
            return
        with self.timed(pl_module.device):
            values = self.measure(trainer, pl_module, batch)
        self.measured_steps.append(step)
        for key, value in values.items():
            value = float(value)
            self.history.setdefault(key, []).append([step, value])
            if math.isfinite(value):
                pl_module.log(key, value, on_step=True, on_epoch=False, batch_size=1)

    # ----- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"history": self.history, "measured_steps": self.measured_steps, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {k: [list(p) for p in v] for k, v in state_dict["history"].items()}
        self.measured_steps = list(state_dict["measured_steps"])
        self.seconds = float(state_dict.get("seconds", 0.0))
