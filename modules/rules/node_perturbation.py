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

import torch

from modules.rules import register
from modules.rules.base import Estimate, StochasticRule
from modules.rules.rtrl import presynaptic, readout_part, rollout, with_estimate


def trial_losses(objective, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) each trial's share of objective.data_loss: the trial's mean loss weighted by its loss steps."""
    def one(y_hat_b, y_b, mask_b):
        count = mask_b.sum()
        loss = objective.data_loss(y_hat_b[None], y_b[None], mask_b[None])
        return torch.where(count > 0, loss * count, torch.zeros_like(loss))
    return torch.func.vmap(one)(y_hat, y, mask) / mask.sum()


@torch.no_grad()
def perturbation_estimates(net, batch, objective, noise, r_clean: torch.Tensor, zeta: torch.Tensor,
                           sigma: float) -> torch.Tensor:
    """One estimate per trial (B, N, Z) for the perturbation zeta (B, T, N) of std sigma."""
    x, y, mask = batch
    _, r = rollout(net, x, noise, perturbation=zeta)
    signal = (trial_losses(objective, net.readout(r), y, mask)
              - trial_losses(objective, net.readout(r_clean), y, mask)) / sigma ** 2
    return signal[:, None, None] * torch.einsum("btp,btq->bpq", zeta, presynaptic(net, r, x))


@register
class NodePerturbation(StochasticRule):
    name = "node_perturbation"

    def __init__(self, net, sigma: float = 1e-2):
        super().__init__(net)
        if sigma <= 0:
            raise ValueError(f"rule.sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        with torch.no_grad():
            _, r = rollout(net, x, noise)
        loss, y_hat, _ = readout_part(net, r, batch, objective)
        gen = generator if generator is not None else self.generator(x.device)
        zeta = self.sigma * torch.randn(r.shape, generator=gen, device=r.device, dtype=r.dtype)
        grad = perturbation_estimates(net, batch, objective, noise, r, zeta, self.sigma).sum(0)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
