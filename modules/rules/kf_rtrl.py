"""KF-RTRL: Kronecker-factored RTRL (Mujika, Meier & Steger 2018), RTRL's influence as one Kronecker product.

In rtrl.py's notation (theta[p, q] the weight from z_q onto unit p, z_t = [r_{t-1}, x_t, 1], the influence
M_t[i, p, q] = dh_{t,i} / dtheta[p, q], J_t = (1 - a) I + a W_h diag(psi_{t-1})), the exact recursion is

    M_t = J_t M_{t-1} + F_t        F_t[i, p, q] = a [i = p] z_{t,q}   (= z_t (x) a I: already a Kronecker product)

KF-RTRL keeps, per trial, M_t ~ u_t (x) A_t, i.e. M_t[i, p, q] ~ A_t[i, p] u_t[q] (u_t of size Z, A_t N x N).
The sum of the two Kronecker products u_{t-1} (x) J_t A_{t-1} and z_t (x) a I is replaced by one, with two
independent random signs c1, c2 per trial and step:

    u_t = c1 rho0 u_{t-1} + c2 rho1 z_t        A_t = c1 J_t A_{t-1} / rho0 + c2 a I / rho1
    rho0 = sqrt((|J_t A_{t-1}| + eps) / (|u_{t-1}| + eps))      rho1 = sqrt((|a I| + eps) / (|z_t| + eps))
    estimate = sum_t (A_t^T c_t) (x) u_t       c_t = psi_t * dL/dr_t,   u_0 = A_0 = 0 before the first step

E[c1 c2] = 0 and the signs of step t are independent of everything before, so E[u_t (x) A_t] = J_t
E[u_{t-1} (x) A_{t-1}] + F_t = M_t: the estimate is unbiased for the exact gradient; rho0, rho1 (the
variance-minimising choice of the paper: they equalise the norms of the two factors of each term) only scale
the cross terms. Its variance is far smaller than UORO's (the N x N factor A keeps J_t exactly).
The readout and the L2 term get exact gradients, as in rtrl.

Cost per step and trial: J_t A_{t-1} is an N x N by N x N product, O(N^3) time; memory B N^2 for A (RTRL:
B N^2 Z and O(N^4)). Randomness: the signs come from StochasticRule.generator (keyed on rule seed, step,
rank, stream: reproducible, exact on resume, never consumed by measurements); `generator=` overrides it.
"""
from __future__ import annotations

import math

import torch

from modules.rules import register
from modules.rules.base import Estimate, StochasticRule
from modules.rules.rtrl import online_pass, presynaptic, with_estimate
from modules.rules.uoro import draw_signs


@torch.no_grad()
def kf_rtrl_estimate(net, r: torch.Tensor, psi: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
                     signs: torch.Tensor, eps: float = 1e-7, per_trial: bool = False) -> torch.Tensor:
    """The KF-RTRL estimate summed over the batch, (N, Z) (per_trial: one per trial, (B, N, Z)); r, psi, c
    (B, T, N), z (B, T, Z), signs (B, T, 2) of +-1 (c1, c2 of every trial and step)."""
    alpha = net.alpha
    w_h = net.recurrent_weight()
    b, t_len, n = r.shape
    u = r.new_zeros(b, z.shape[-1])
    a_factor = r.new_zeros(b, n, n)
    eye = torch.eye(n, dtype=r.dtype, device=r.device)
    identity_norm = alpha * math.sqrt(n)                              # |a I|_F
    credit = r.new_zeros(b, t_len, n)                                 # A_t^T c_t
    us = r.new_zeros(b, t_len, z.shape[-1])                           # u_t
    for t in range(t_len):
        if t > 0:  # J_t A_{t-1}: (1 - a) A + a W_h (psi_{t-1} scaling the rows of A)
            ja = (1.0 - alpha) * a_factor + alpha * w_h @ (psi[:, t - 1, :, None] * a_factor)
        else:
            ja = a_factor
        rho0 = ((ja.flatten(1).norm(dim=1) + eps) / (u.norm(dim=1) + eps)).sqrt()
        rho1 = ((identity_norm + eps) / (z[:, t].norm(dim=1) + eps)).sqrt()
        c1, c2 = signs[:, t, 0], signs[:, t, 1]
        u = (c1 * rho0)[:, None] * u + (c2 * rho1)[:, None] * z[:, t]
        a_factor = (c1 / rho0)[:, None, None] * ja + (c2 * alpha / rho1)[:, None, None] * eye
        credit[:, t] = torch.einsum("bi,bip->bp", c[:, t], a_factor)
        us[:, t] = u
    if per_trial:
        return torch.einsum("btp,btq->bpq", credit, us)
    return credit.flatten(0, 1).T @ us.flatten(0, 1)


@register
class KFRTRL(StochasticRule):
    name = "kf_rtrl"
    unbiased = True

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        _, r, loss, y_hat, d_r, psi = online_pass(net, batch, objective, noise)
        gen = generator if generator is not None else self.generator(x.device)
        signs = draw_signs((r.shape[0], r.shape[1], 2), gen, r)
        grad = kf_rtrl_estimate(net, r, psi, presynaptic(net, r, x), psi * d_r, signs)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
