"""The training objective: a task loss on the steps that carry loss, plus an optional L2 regulariser.

Shapes: y_hat (B, T, N_out); mask (B, T) with 1 where a step carries loss. For cross-entropy the
target is (B, T) class indices; for MSE it is (B, T, N_out). Both losses average over loss-carrying steps
(and output units for MSE), so the value does not depend on T or on how many steps carry loss.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

LOSSES = ("ce", "mse")


def step_losses(kind: str, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of every step (B, T), before masking."""
    if kind == "ce":
        return F.cross_entropy(y_hat.transpose(1, 2), y, reduction="none")
    if kind == "mse":
        return (y_hat - y).pow(2).mean(dim=-1)
    raise ValueError(f"unknown loss '{kind}'; choose one of: {', '.join(LOSSES)}")


def task_loss(kind: str, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean loss over the steps where mask is 1."""
    weight = mask.to(y_hat.dtype)
    return (step_losses(kind, y_hat, y) * weight).sum() / weight.sum()


def trial_losses(kind: str, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each trial's share (B,) of task_loss: they add up to the batch's loss."""
    weight = mask.to(y_hat.dtype)
    return (step_losses(kind, y_hat, y) * weight).sum(1) / weight.sum()


@torch.no_grad()
def task_scores(kind: str, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over a batch, to be added up over batches: loss_sum, count, and correct (ce) or sq_target (mse)."""
    weight = mask.to(y_hat.dtype)
    count = weight.sum()
    out = {"loss_sum": task_loss(kind, y_hat, y, mask) * count, "count": count}
    if kind == "ce":
        out["correct"] = ((y_hat.argmax(-1) == y).to(y_hat.dtype) * weight).sum()
    else:
        # total variance of the target around its mean, for a normalised MSE
        out["sq_target"] = ((y - y.mean(dim=(0, 1), keepdim=True)).pow(2).mean(-1) * weight).sum()
    return out


class Objective:
    """Data loss plus `l2 * 0.5 * sum(w^2)` over the weight matrices (not biases)."""

    def __init__(self, loss: str, l2: float = 0.0):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}'; choose one of: {', '.join(LOSSES)}")
        self.loss, self.l2 = loss, float(l2)

    def data_loss(self, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return task_loss(self.loss, y_hat, y, mask)

    def regulariser(self, weights: list[torch.Tensor]) -> torch.Tensor | float:
        if self.l2 == 0.0:
            return 0.0
        return 0.5 * self.l2 * sum(w.pow(2).sum() for w in weights)

    def __call__(self, y_hat, y, mask, weights) -> torch.Tensor:
        return self.data_loss(y_hat, y, mask) + self.regulariser(weights)
