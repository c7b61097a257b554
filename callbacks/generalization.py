"""Generalization: loss (and accuracy, or normalised MSE) on the whole training and test sets, and gaps.

Keys: train/loss, test/loss, gap/loss = test_loss - train_loss (all tasks; primary for regression);
train/acc, test/acc, gap/acc = train_acc - test_acc (classification); train/nmse, test/nmse (regression:
MSE divided by the target's variance); shift/loss, shift/acc (shift/nmse) on the task's shifted test set
when it has one (an extra metric, not part of the gap). Evaluated with the exact, noiseless network.
"""
from __future__ import annotations

import torch

from callbacks.history import HistoryCallback
from modules.objective import task_scores
from modules.rules.base import prepare_batch


@torch.no_grad()
def evaluate(net, trials, loss_kind: str, batch_size: int = 1024) -> dict[str, float]:
    """Scores of `net` on a whole TrialSet, in chunks of batch_size; see module docstring for keys."""
    totals: dict[str, torch.Tensor] = {}
    steps = trials.mask.reshape(len(trials), -1).any(0).nonzero().flatten()  # the readout only where scored
    for start in range(0, len(trials), batch_size):
        x, y, mask = prepare_batch(trials.batch(slice(start, start + batch_size)), net)
        y_hat = net.predict(x, steps)
        for k, v in task_scores(loss_kind, y_hat, y, mask).items():
            totals[k] = totals.get(k, 0.0) + v
    out = {"loss": float(totals["loss_sum"] / totals["count"])}
    if loss_kind == "ce":
        out["acc"] = float(totals["correct"] / totals["count"])
    else:
        out["nmse"] = float(totals["loss_sum"] / totals["sq_target"].clamp_min(1e-12))
    return out


class Generalization(HistoryCallback):
    def __init__(self, every_n_steps: int = 200, batch_size: int = 1024):
        super().__init__()
        self.every_n_steps, self.batch_size = int(every_n_steps), int(batch_size)

    @classmethod
    def from_config(cls, cfg) -> "Generalization":
        return cls(every_n_steps=cfg.eval_every)

    def measure(self, trainer, pl_module, batch=None) -> dict[str, float]:
        dm = trainer.datamodule
        was_training = pl_module.net.training
        pl_module.net.eval()
        train = evaluate(pl_module.net, dm.train_set, dm.loss, self.batch_size)
        test = evaluate(pl_module.net, dm.test_set, dm.loss, self.batch_size)
        shift = evaluate(pl_module.net, dm.shift_set, dm.loss, self.batch_size) if dm.shift_set is not None else {}
        pl_module.net.train(was_training)
        out = {f"train/{k}": v for k, v in train.items()} | {f"test/{k}": v for k, v in test.items()}
        out |= {f"shift/{k}": v for k, v in shift.items()}
        out["gap/loss"] = test["loss"] - train["loss"]
        if "acc" in train:
            out["gap/acc"] = train["acc"] - test["acc"]
        return out
