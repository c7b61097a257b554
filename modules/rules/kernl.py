"""KeRNL: kernel RNN learning (Roth, Kanitscheider & Fiete, ICLR 2019), learned eligibility kernels.
A rule that learns (modules/rules/base.py): beta (N x N) and the per-unit decays lambda (N) are its own.

In rtrl.py's notation (theta[p, q] the weight from z_q onto unit p, z_t = [r_{t-1}, x_t, 1]), KeRNL replaces
the influence dh_{t,k} / dtheta[p, q] by a sensitivity beta[k, p] times an eligibility trace with a learned
exponential kernel per postsynaptic unit:

    eps_t[p, q] = lambda_p eps_{t-1}[p, q] + a z_{t,q}          dh_{t,k} / dtheta[p, q] ~ beta[k, p] eps_t[p, q]
    grad theta[p, q] = sum_t (beta^T c_t)_p eps_t[p, q]         c_t = psi_t * dL/dr_t = W_out^T delta_t * psi_t

(computed backwards: g_t = beta^T c_t + lambda * g_{t+1}, grad theta = a sum_t g_t z_t^T, no N x Z trace per
trial). With beta = I and lambda = 1 - a this is e-prop exactly: the rule starts there (`beta`, `decay`
initialised so) and learns away from it. The readout and the L2 term get exact gradients.

beta and lambda learn to predict how a perturbation of the units spreads through the network, the paper's
local objective: a second forward pass with small noise sigma xi_t (xi ~ N(0, 1), keyed draws) added to
every unit's input u_t (as node perturbation does), and the kernel's prediction of the response,

    dh_t = h_t(perturbed) - h_t         zeta_t = lambda * zeta_{t-1} + a sigma xi_t   (the noise's own trace)
    aux = 1 / (2 sigma^2 B T) sum_{b, t} |dh_t - beta zeta_t|^2

(averaged over trials and steps, scaled by 1/sigma^2 so that its size does not depend on sigma). Its
gradient in beta and lambda is the update, by the rule's own optimizer (rule.optimizer, rule.lr). lambda
is used clamped to [0, 1] in both the trace and the objective, with the gradient passed straight through
the clamp (so a unit pushed to a bound can come back).

Choices where the paper is silent for this network: the perturbation enters u_t (the influence of theta
enters there too, so both traces share the kernel and the factor a); dh is the pre-activation state h
(the paper's a); the perturbation's size sigma = rule.sigma (default 1e-3: linear response, and float32's
resolution of dh still ~1e-4 of it); one perturbed pass per training step with every trial's own draw.
"""
from __future__ import annotations

import math

import torch

from modules.rules import register
from modules.rules.base import Estimate, StochasticRule
from modules.rules.rtrl import online_pass, presynaptic, rollout, with_estimate


def clamped(decay: torch.Tensor) -> torch.Tensor:
    """decay clamped to [0, 1] in value, with its gradient passed straight through."""
    return decay + (decay.clamp(0.0, 1.0) - decay).detach()


@torch.no_grad()
def kernl_gradient(net, c: torch.Tensor, z: torch.Tensor, beta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """sum_t (beta^T c_t) * eps_t over the batch, (N, Z); c (B, T, N), z (B, T, Z), beta (N, N), lam (N,)."""
    signal = c @ beta                                  # (B, T, N): (beta^T c_t)_p
    g = torch.zeros_like(signal[:, 0])
    filtered = torch.empty_like(signal)
    for t in reversed(range(c.shape[1])):
        g = signal[:, t] + lam * g
        filtered[:, t] = g
    return net.alpha * filtered.flatten(0, 1).T @ z.flatten(0, 1)


def kernel_objective(dh: torch.Tensor, xi: torch.Tensor, beta: torch.Tensor, lam: torch.Tensor,
                     alpha: float, sigma: float) -> torch.Tensor:
    """1 / (2 sigma^2 B T) sum |dh_t - beta zeta_t|^2, zeta_t = lam zeta_{t-1} + a sigma xi_t; dh, xi (B, T, N)."""
    zeta = torch.zeros_like(xi[:, 0])
    total = dh.new_zeros(())
    for t in range(xi.shape[1]):
        zeta = lam * zeta + alpha * sigma * xi[:, t]
        total = total + (dh[:, t] - zeta @ beta.T).pow(2).sum()
    return total / (2.0 * sigma ** 2 * xi.shape[0] * xi.shape[1])


@register
class KeRNL(StochasticRule):
    name = "kernl"
    learns = True

    def __init__(self, net, lr: float = 1e-3, optimizer: str = "adam", sigma: float = 1e-3):
        super().__init__(net)  # conf/rule/kernl.yaml explains the defaults
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"rule.sigma={sigma!r} is not allowed; it must be a number > 0")
        self.sigma = float(sigma)
        self.learn_with(lr, optimizer)
        n, dtype, device = net.hidden_size, net.W_h.dtype, net.W_h.device
        self.beta = torch.nn.Parameter(torch.eye(n, dtype=dtype, device=device))
        self.decay = torch.nn.Parameter(torch.full((n,), 1.0 - net.alpha, dtype=dtype, device=device))

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        x = batch[0]
        h, r, loss, y_hat, d_r, psi = online_pass(net, batch, objective, noise)
        lam = clamped(self.decay)
        grad = kernl_gradient(net, psi * d_r, presynaptic(net, r, x), self.beta.detach(), lam.detach())
        gen = generator if generator is not None else self.generator(x.device)
        xi = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
        with torch.no_grad():
            h_perturbed, _ = rollout(net, x, noise, perturbation=self.sigma * xi)
        aux = kernel_objective(h_perturbed - h, xi, self.beta, lam, net.alpha, self.sigma)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach(), aux_loss=aux)
