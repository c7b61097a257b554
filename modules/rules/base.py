"""The rule interface: a rule turns one batch into a *surrogate* scalar whose gradient is its update.

Why a surrogate and not gradients: the estimate then arrives through an ordinary backward pass, so
Lightning's manual_backward (and DDP's gradient averaging across ranks) treats every rule exactly like
BPTT, and a measurement can ask for the same estimate with torch.autograd.grad without touching `.grad`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modules.objective import Objective
from modules.rnn import RateRNN

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B, T, N_in), y, mask (B, T)


def prepare_batch(batch: Batch, net: nn.Module) -> Batch:
    """The batch on the network's device, inputs in its dtype (targets keep theirs: class indices stay long)."""
    w = net.W_h
    x, y, mask = batch
    y = y.to(w.device) if not y.is_floating_point() else y.to(w.device, w.dtype)
    return x.to(w.device, w.dtype), y, mask.to(w.device, w.dtype)


@dataclass
class Estimate:
    surrogate: torch.Tensor  # scalar; d(surrogate)/d(params) is the rule's gradient estimate
    loss: torch.Tensor       # the training objective of the exact forward pass (same value for every rule)
    y_hat: torch.Tensor      # readout (B, T, N_out)


class Rule(nn.Module):
    """A gradient estimator. Subclasses set `name` and implement `surrogate`.

    A rule is an nn.Module only so that its state (e.g. RFLO's feedback matrix) is saved in checkpoints
    and moved to the model's device; it has no trainable parameters.
    """

    name: str = ""
    exact: bool = False  # True when the estimate is the exact gradient (rho = 1 by construction)

    def __init__(self, net: RateRNN):
        super().__init__()
        self.step = 0
        self.warnings: list[str] = []  # said once, in the log and in summary.json

    def set_step(self, step: int) -> None:
        """The training step whose batch the next estimate is for (set by the training loop and by the
        alignment measurement); only step-dependent rules (bptt_scaled following a rho history) read it."""
        self.step = int(step)

    def surrogate(self, net: RateRNN, batch: Batch, objective: Objective,
                  noise: torch.Tensor | None = None) -> Estimate:
        raise NotImplementedError

    @staticmethod
    def objective_of(net: RateRNN, y_hat: torch.Tensor, batch: Batch, objective: Objective) -> torch.Tensor:
        _, y, mask = batch
        return objective(y_hat, y, mask, [net.W_x, net.W_h, net.W_out])
