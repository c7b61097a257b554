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
from modules.rules.rtrl import online_pass, presynaptic, with_estimate


@torch.no_grad()
def uoro_estimates(net, r: torch.Tensor, psi: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
                   signs: torch.Tensor, eps: float = 1e-7, per_trial: bool = True) -> torch.Tensor:
    """One UORO estimate per trial, (B, N, Z); r, psi, c, signs (+-1) (B, T, N), z (B, T, Z) as in rtrl_gradient.
    per_trial=False: their sum over the batch (N, Z), as one product (what a training step needs).

    theta_t is never built step by step (that costs B N Z per step): with P_t = rho0_1 ... rho0_t it is
    theta_t = sum_{k<=t} (P_k / P_t) F_k / rho1_k, so the estimate is sum_k coef_k nu_k z_k^T with
    coef_k = (a / rho1_k) sum_{t>=k} (c_t . s_t) P_k / P_t, one batched product at the end; |theta_t| (for
    rho0) follows from |theta_t|^2 = |theta_{t-1}|^2 / rho0^2 + 2 <theta_{t-1}, F_t> / (rho0 rho1) + |F_t|^2 / rho1^2,
    where <theta_{t-1}, nu_t z_t^T> needs only the dot products nu_t . nu_k and z_t . z_k.
    """
    alpha = net.alpha
    w_h = net.recurrent_weight()
    b, t_len, n = r.shape
    gram_z = z @ z.transpose(1, 2)                          # (B, T, T): z_t . z_k
    gram_nu = signs @ signs.transpose(1, 2)                 # (B, T, T): nu_t . nu_k, one product for all steps
    s = r.new_zeros(b, n)
    sq_theta = r.new_zeros(b)                               # |theta_{t-1}|^2
    log_p = r.new_zeros(b, t_len)                           # log P_t
    inv_rho1 = r.new_zeros(b, t_len)
    a = r.new_zeros(b, t_len)                               # c_t . s_t
    for t in range(t_len):
        nu = signs[:, t]
        js = (1.0 - alpha) * s + alpha * (psi[:, t - 1] * s) @ w_h.T if t > 0 else s
        f_norm = alpha * nu.norm(dim=1) * gram_z[:, t, t].sqrt()
        rho0 = ((sq_theta.sqrt() + eps) / (js.norm(dim=1) + eps)).sqrt()
        rho1 = ((f_norm + eps) / (nu.norm(dim=1) + eps)).sqrt()
        log_p[:, t] = rho0.log() + (log_p[:, t - 1] if t > 0 else 0.0)
        inv_rho1[:, t] = 1.0 / rho1
        if t > 0:  # <theta_{t-1}, F_t> = a^2 sum_{k<t} (P_k / P_{t-1}) / rho1_k (nu_t . nu_k)(z_t . z_k)
            weights = (log_p[:, :t] - log_p[:, t - 1, None]).exp() * inv_rho1[:, :t]
            cross = alpha ** 2 * (weights * gram_nu[:, t, :t] * gram_z[:, t, :t]).sum(1)
        else:
            cross = torch.zeros_like(sq_theta)
        sq_theta = (sq_theta / rho0 ** 2 + 2.0 * cross / (rho0 * rho1) + (f_norm / rho1) ** 2).clamp_min(0.0)
        s = rho0[:, None] * js + rho1[:, None] * nu
        a[:, t] = (c[:, t] * s).sum(1)
    # coef_k = a / rho1_k sum_{t >= k} a_t P_k / P_t
    later = torch.ones(t_len, t_len, dtype=torch.bool, device=r.device).triu()  # [k, t]: t >= k
    ratio = (log_p[:, :, None] - log_p[:, None, :]).masked_fill(~later, float("-inf")).exp()
    coef = alpha * inv_rho1 * (ratio * a[:, None, :]).sum(2)
    if per_trial:
        return torch.einsum("bk,bkn,bkq->bnq", coef, signs, z)
    return (coef[..., None] * signs).flatten(0, 1).T @ z.flatten(0, 1)


def draw_signs(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Independent +-1 of `shape`, in like's dtype and device."""
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2.0 - 1.0


@register
class UORO(StochasticRule):
    name = "uoro"
    unbiased = True

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        _, r, loss, y_hat, d_r, psi = online_pass(net, batch, objective, noise)
        gen = generator if generator is not None else self.generator(x.device)
        signs = draw_signs(r.shape, gen, r)
        grad = uoro_estimates(net, r, psi, presynaptic(net, r, x), psi * d_r, signs, per_trial=False)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
