"""Alignment of the rule's W_h update with the exact gradient, and the Theorem 1 quantities.

On the training batch of step k, at the weights before its update (phase "before"), with the noiseless
network: g = d objective / d W_h of the exact (BPTT) forward, g_hat = d surrogate / d W_h of the rule's
surrogate (its estimate). Writing g_hat = rho g + e with e orthogonal to g:

    align/rho     = <g_hat, g> / <g, g>
    align/cos     = <g_hat, g> / (|g_hat| |g|)
    align/e_ratio = |g_hat - rho g| / |g|
    align/norm_ratio = |g_hat| / |g|             (a well-aligned but vanishingly short update has a tiny one)

Theorem 1's quantities (|rho| eta lambda_1 and its bound) are computed at curvature steps, from that
step's lambda_1 and the mean rho since the previous one: callbacks/theory.py.

Both gradients come from torch.autograd.grad, never .backward(): nothing reaches .grad, and under DDP no
gradient all-reduce is triggered (each rank measures its own slice of the batch).
"""
from __future__ import annotations

import torch

from callbacks.history import HistoryCallback
from modules.rules.base import prepare_batch

def alignment(g_hat: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
    """rho, cos, e_ratio and norm_ratio of an estimate g_hat against the true gradient g (same shape), in float64."""
    g_hat, g = g_hat.detach().double().reshape(-1), g.detach().double().reshape(-1)
    gg = torch.dot(g, g)
    rho = torch.dot(g_hat, g) / gg
    return {"align/rho": float(rho),
            "align/cos": float(torch.dot(g_hat, g) / (g_hat.norm() * g.norm())),
            "align/e_ratio": float((g_hat - rho * g).norm() / gg.sqrt()),
            "align/norm_ratio": float(g_hat.norm() / gg.sqrt())}


def gradients(pl_module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_hat, g) for W_h on `batch`: the rule's estimate and the exact gradient of the objective."""
    net, rule, objective = pl_module.net, pl_module.rule, pl_module.objective
    w = net.W_h
    batch = prepare_batch(batch, net)
    with torch.enable_grad():
        y_hat, _ = net(batch[0])
        (g,) = torch.autograd.grad(rule.objective_of(net, y_hat, batch, objective), w)
        if rule.surrogate_is_objective:  # the same computation again would give the same tensor
            return g, g
        (g_hat,) = torch.autograd.grad(rule.surrogate(net, batch, objective).surrogate, w)
    return g_hat, g


class Alignment(HistoryCallback):
    phase = "before"

    def __init__(self, every_n_steps: int = 50):
        super().__init__()
        self.every_n_steps = int(every_n_steps)

    @classmethod
    def from_config(cls, cfg) -> "Alignment":
        return cls(every_n_steps=cfg.alignment.every_n_steps)

    def measure(self, trainer, pl_module, batch) -> dict[str, float]:
        pl_module.rule.set_step(trainer.global_step)  # a step-dependent rule estimates as in training
        return alignment(*gradients(pl_module, batch))
