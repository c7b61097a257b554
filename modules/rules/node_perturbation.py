"""Node perturbation: the classic zeroth-order rule. Every unit's input is perturbed with Gaussian noise,
and the change of the trial's loss, against an unperturbed pass on the same batch (the baseline), is the
learning signal; the perturbation times the presynaptic input is the eligibility.

For trial b, perturbation zeta_{b,t} ~ N(0, sigma^2 I) added to u_t (h_t = (1 - a) h_{t-1} + a (u_t + zeta_t)):

    estimate[p, q] = sum_b (L_b(zeta_b) - L_b(0)) / sigma^2 * sum_t zeta_{b,t,p} z'_{b,t,q}

with z'_t = [r'_{t-1}, x_t, 1] the presynaptic input seen in the perturbed trial, and L_b trial b's share
of the data loss (sum_b L_b = the batch's data loss). To first order L_b(zeta) - L_b(0) = sum_t dL/du_t .
zeta_t, so the estimate is the gradient plus zero-mean noise; the odd moments of zeta vanish, so its bias
is O(sigma^2) for a smooth activation (tests/test_online_rules.py measures it). The readout and the L2 term
get exact gradients, as in rtrl.

`rule.sigma` (conf/rule/node_perturbation.yaml) is the perturbation's std in units of u (the same units as
W_h r + W_x x + b). Randomness: StochasticRule.generator (modules/rules/base.py), keyed on (rule seed, step,
rank, stream): reproducible, exact on resume, and measurements draw their own perturbation.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from modules.rules import register
from modules.rules.base import Estimate, StochasticRule
from modules.objective import trial_losses
from modules.rules.rtrl import presynaptic, readout_part, rollout, with_estimate


@torch.no_grad()
def paired_rates(net, x: torch.Tensor, noise, zeta: torch.Tensor) -> torch.Tensor:
    """Rates of the clean and the perturbed pass (2, B, T, N) from one loop over both: one matmul of 2B rows
    per step, the input drive computed once, zeta (B, T, N) added to the second's u_t. The operations of
    RateRNN's forward pass, so the clean rates are the network's."""
    alpha, w_t = net.alpha, net.recurrent_weight().T
    drive = F.linear(x, net.W_x, net.b)
    if noise is not None:
        drive = drive + (net.noise_std / math.sqrt(alpha)) * noise
    h = x.new_zeros(2, x.shape[0], net.hidden_size)
    r, rates = h, x.new_empty(2, x.shape[0], x.shape[1], net.hidden_size)
    for t in range(x.shape[1]):
        u = r @ w_t
        u += drive[:, t]   # both passes
        u[1] += zeta[:, t]  # the perturbed one
        h = u if alpha == 1.0 else (1.0 - alpha) * h + alpha * u
        r = net.f(h)
        rates[:, :, t] = r
    return rates


@torch.no_grad()
def loss_change(net, batch, objective, r_clean: torch.Tensor, r_perturbed: torch.Tensor,
                sigma: float) -> torch.Tensor:
    """(L_b(zeta) - L_b(0)) / sigma^2 for every trial b (B,) from the two passes' rates (B, T, N): the
    learning signal."""
    _, y, mask = batch
    return (trial_losses(objective.loss, net.readout(r_perturbed), y, mask)
            - trial_losses(objective.loss, net.readout(r_clean), y, mask)) / sigma ** 2


@torch.no_grad()
def perturbation_estimates(net, batch, objective, noise, r_clean: torch.Tensor, zeta: torch.Tensor,
                           sigma: float) -> torch.Tensor:
    """One estimate per trial (B, N, Z) for the perturbation zeta (B, T, N) of std sigma."""
    x = batch[0]
    _, r = rollout(net, x, noise, perturbation=zeta)
    signal = loss_change(net, batch, objective, r_clean, r, sigma)
    return signal[:, None, None] * torch.einsum("btp,btq->bpq", zeta, presynaptic(net, r, x))


@register
class NodePerturbation(StochasticRule):
    name = "node_perturbation"
    unbiased = True  # up to O(sigma^2) (tests/test_online_rules.py), far below its sampling error

    def __init__(self, net, sigma: float = 1e-2):
        super().__init__(net)
        if sigma <= 0:
            raise ValueError(f"rule.sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        gen = generator if generator is not None else self.generator(x.device)
        shape = (x.shape[0], x.shape[1], net.hidden_size)
        zeta = self.sigma * torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)
        r, r_perturbed = paired_rates(net, x, noise, zeta)                # (B, T, N) each
        loss, y_hat, _ = readout_part(net, r, batch, objective)
        with torch.no_grad():
            signal = loss_change(net, batch, objective, r, r_perturbed, self.sigma)
            # sum_b signal_b sum_t zeta_{b,t} z_{b,t}^T with z_t = [r_{t-1}, x_t, 1], part by part, each one
            # (N x BT) @ (BT x .) product (r_0 = 0); the per-trial estimates are never formed
            weighted = zeta.mul_(signal[:, None, None])
            n, n_in = net.hidden_size, net.input_size
            parts = [weighted[:, 1:].reshape(-1, n).T @ r_perturbed[:, :-1].reshape(-1, n),
                     weighted.reshape(-1, n).T @ x.reshape(-1, n_in)]
            if net.b is not None:
                parts.append(weighted.sum((0, 1))[:, None])
            grad = torch.cat(parts, 1)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
