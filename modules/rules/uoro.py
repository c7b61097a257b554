"""UORO: unbiased online recurrent optimisation (Tallec & Ollivier 2018), RTRL's influence in rank one.

Per trial, the influence M_t = dh_t/dtheta (rtrl.py's notation: theta[p, q] the weight from z_q onto unit
p, z_t = [r_{t-1}, x_t, 1]) is replaced by an outer product s_t theta_t^T (s_t of size N, theta_t of size
N x Z) with E[s_t theta_t^T] = M_t. With nu_t a vector of independent random signs (+-1), J_t as in RTRL
and F_t = a nu_t z_t^T (= nu_t^T of the immediate influence):

    rho0 = sqrt(|theta_{t-1}| / |J_t s_{t-1}|)      rho1 = sqrt(|F_t| / |nu_t|)      (each + eps inside)
    s_t = rho0 J_t s_{t-1} + rho1 nu_t              theta_t = theta_{t-1} / rho0 + F_t / rho1
    estimate = sum_t (c_t . s_t) theta_t           c_t = psi_t * dL/dr_t,   s_0 = theta_0 = 0

rho0, rho1 are the variance-minimising scalings (they balance the norms of the two factors of each
product), even in nu, so the cross terms vanish in expectation and the estimate is unbiased for the exact
gradient; its variance is large. The readout and the L2 term get exact gradients, as in rtrl.

Randomness: the signs come from StochasticRule.generator (modules/rules/base.py): keyed on (rule seed,
step, rank, stream), so a training step's draw is fixed by `seed` and the step, resume is exact, and a
measurement's call draws its own signs. `generator=` in surrogate overrides it (tests).
"""
from __future__ import annotations

import torch

from modules.rules import register
from modules.rules.base import Estimate, StochasticRule
from modules.rules.rtrl import presynaptic, readout_part, rollout, slopes, with_estimate


@torch.no_grad()
def uoro_estimates(net, r: torch.Tensor, psi: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
                   generator: torch.Generator, eps: float = 1e-7) -> torch.Tensor:
    """One UORO estimate per trial, (B, N, Z); r, psi, c (B, T, N), z (B, T, Z) as in rtrl_gradient."""
    alpha = net.alpha
    w_h = net.recurrent_weight()
    b, t_len, n = r.shape
    s = r.new_zeros(b, n)
    theta = r.new_zeros(b, n, z.shape[-1])
    out = torch.zeros_like(theta)
    for t in range(t_len):
        nu = torch.randint(0, 2, (b, n), generator=generator, device=r.device).to(r.dtype) * 2.0 - 1.0
        js = (1.0 - alpha) * s + alpha * (psi[:, t - 1] * s) @ w_h.T if t > 0 else s
        f = alpha * nu[:, :, None] * z[:, t, None, :]
        rho0 = ((theta.flatten(1).norm(dim=1) + eps) / (js.norm(dim=1) + eps)).sqrt()
        rho1 = ((f.flatten(1).norm(dim=1) + eps) / (nu.norm(dim=1) + eps)).sqrt()
        s = rho0[:, None] * js + rho1[:, None] * nu
        theta = theta / rho0[:, None, None] + f / rho1[:, None, None]
        out += (c[:, t] * s).sum(1)[:, None, None] * theta
    return out


@register
class UORO(StochasticRule):
    name = "uoro"

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        with torch.no_grad():
            h, r = rollout(net, x, noise)
        loss, y_hat, d_r = readout_part(net, r, batch, objective)
        psi = slopes(net, h)
        gen = generator if generator is not None else self.generator(x.device)
        grad = uoro_estimates(net, r, psi, presynaptic(net, r, x), psi * d_r, gen).sum(0)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
