"""RTRL: exact real-time recurrent learning, the influence of every recurrent parameter on h carried forward.

Write z_t = [r_{t-1}, x_t, 1] for the presynaptic input of every unit (W_h, W_x and b side by side, so
theta[p, q] is the weight from input q onto unit p) and M_t[i, p, q] = dh_{t,i} / dtheta[p, q] for the
effective weights (net.recurrent_weight()). With J_t = (1 - a) I + a W_h diag(psi_{t-1}):

    M_t = J_t M_{t-1} + a [i = p] z_{t,q}                    M_0 = 0
    grad theta = sum_t c_t . M_t       c_t = psi_t * dL/dr_t (dL/dr_t = W_out^T delta_t, the readout's share)

which equals BPTT's gradient. The gradient of the stored W_h (zero diagonal, Dale's signs) follows by the
chain rule through net.recurrent_weight() in the surrogate. The readout, and the L2 term l2 W on W_x, W_h,
get their exact gradients, which are local.

Cost: M has B x N x N x (N + N_in + 1) entries (memory O(B N^3)) and each step multiplies it by W_h
(O(B N^4) time), so rtrl is for small networks: above `rule.max_influence_mb` it stops with a one-line error,
computed from the configured batch size before anything is allocated.

The helpers here (the exact forward, the readout's share of the surrogate) are shared by uoro and
node_perturbation.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from modules.rules import register
from modules.rules.base import Estimate, Rule


def rollout(net, x: torch.Tensor, noise: torch.Tensor | None = None,
            perturbation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """h and r (B, T, N) of the network's exact forward pass (the same operations as RateRNN._loop), with an
    optional `perturbation` (B, T, N) added to every unit's input u_t (node perturbation)."""
    alpha = net.alpha
    w_h = net.recurrent_weight()
    drive = F.linear(x, net.W_x, net.b)
    if noise is not None:
        drive = drive + (net.noise_std / math.sqrt(alpha)) * noise
    h = x.new_zeros(x.shape[0], net.hidden_size)
    r = h
    hs, rs = [], []
    for t, drive_t in enumerate(drive.unbind(1)):
        u = drive_t + r @ w_h.T
        if perturbation is not None:
            u = u + perturbation[:, t]
        h = u if alpha == 1.0 else (1.0 - alpha) * h + alpha * u
        r = net.f(h)
        hs.append(h)
        rs.append(r)
    return torch.stack(hs, 1), torch.stack(rs, 1)


def slopes(net, h: torch.Tensor) -> torch.Tensor:
    """psi = f'(h), as autograd differentiates the network's activation."""
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        (psi,) = torch.autograd.grad(net.f(h).sum(), h)
    return psi


def presynaptic(net, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """z_t = [r_{t-1}, x_t, 1 (with a bias)] of shape (B, T, N + N_in (+ 1)): what every unit's weights see."""
    r_prev = torch.cat([r.new_zeros(r.shape[0], 1, r.shape[2]), r[:, :-1]], 1)
    parts = [r_prev, x] + ([x.new_ones(x.shape[0], x.shape[1], 1)] if net.b is not None else [])
    return torch.cat(parts, -1)


def readout_part(net, r: torch.Tensor, batch, objective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective, y_hat, dL/dr) with the rates held fixed: the objective's gradient is then exact for W_out,
    b_out and the L2 term on W_x and W_h, and zero otherwise; dL/dr (B, T, N) is W_out^T delta_t."""
    r = r.detach().requires_grad_(True)
    with torch.enable_grad():
        y_hat = net.readout(r)
        loss = Rule.objective_of(net, y_hat, batch, objective)
        (d_r,) = torch.autograd.grad(loss, r, retain_graph=True)
    return loss, y_hat, d_r


def online_pass(net, batch, objective, noise=None):
    """The forward-mode rules' common start (RTRL, UORO, KF-RTRL, KeRNL, ModProp): the exact rollout without
    a graph, the readout part and the slopes. Returns h, r, the objective, y_hat, dL/dr and psi = f'(h)."""
    with torch.no_grad():
        h, r = rollout(net, batch[0], noise)
    loss, y_hat, d_r = readout_part(net, r, batch, objective)
    return h, r, loss, y_hat, d_r, slopes(net, h)


def with_estimate(net, loss: torch.Tensor, theta_grad: torch.Tensor) -> torch.Tensor:
    """loss + a zero-valued term whose gradient is `theta_grad` (N, N + N_in (+ 1)) for the effective W_h,
    W_x and b, taken to the stored parameters by the chain rule (zero diagonal, Dale's signs)."""
    n, n_in = net.hidden_size, net.input_size
    g = theta_grad.detach()
    pairs = [(g[:, :n], net.recurrent_weight()), (g[:, n:n + n_in], net.W_x)]
    if net.b is not None:
        pairs.append((g[:, n + n_in], net.b))
    return loss + sum((gw * (w - w.detach())).sum() for gw, w in pairs)


@torch.no_grad()
def rtrl_gradient(net, r: torch.Tensor, psi: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """sum_t c_t . M_t (N, Z) by the influence recursion of the module docstring; r, psi, c (B, T, N), z (B, T, Z)."""
    alpha = net.alpha
    w_h = net.recurrent_weight()
    b, t_len, n = r.shape
    influence = r.new_zeros(b, n, n, z.shape[-1])  # M[b, i, p, q]
    grad = r.new_zeros(n, z.shape[-1])
    for t in range(t_len):
        if t > 0:
            carried = torch.einsum("ij,bjpq->bipq", w_h, psi[:, t - 1, :, None, None] * influence)
            influence = (1.0 - alpha) * influence + alpha * carried
        influence.diagonal(dim1=1, dim2=2).add_(alpha * z[:, t, :, None])  # [i = p] a z_{t,q}
        grad += torch.einsum("bi,bipq->pq", c[:, t], influence)
    return grad


def influence_mb(batch_size: int, net) -> float:
    """MiB of RTRL's influence tensor for this network and batch size."""
    z = net.hidden_size + net.input_size + (1 if net.b is not None else 0)
    return batch_size * net.hidden_size ** 2 * z * net.W_h.element_size() / 2 ** 20


@register
class RTRL(Rule):
    name = "rtrl"
    exact = True

    def __init__(self, net, max_influence_mb: float = 16.0, batch_size: int | None = None):
        """max_influence_mb: the largest influence tensor allowed; batch_size: the configured batch size,
        checked here so that a too-large run fails before anything is allocated (checked again per batch)."""
        super().__init__(net)
        self.max_influence_mb = float(max_influence_mb)
        if batch_size is not None:
            self.check_size(int(batch_size), net)

    def check_size(self, batch_size: int, net) -> None:
        need = influence_mb(batch_size, net)
        if need > self.max_influence_mb:
            n = net.hidden_size
            while n > 1 and influence_mb(batch_size, _Sizes(n, net)) > self.max_influence_mb:
                n -= 1
            raise ValueError(f"rule=rtrl needs a {need:.0f} MiB influence tensor (batch {batch_size} x N^2 x "
                             f"(N + N_in + 1), N={net.hidden_size}) > rule.max_influence_mb="
                             f"{self.max_influence_mb:g}: use model.hidden_size<={n}, a smaller batch, or raise "
                             f"rule.max_influence_mb")

    def surrogate(self, net, batch, objective, noise=None):
        x = batch[0]
        self.check_size(x.shape[0], net)
        _, r, loss, y_hat, d_r, psi = online_pass(net, batch, objective, noise)
        grad = rtrl_gradient(net, r, psi, presynaptic(net, r, x), psi * d_r)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())


class _Sizes:
    """The sizes influence_mb reads, for a hypothetical hidden size."""

    def __init__(self, n, net):
        self.hidden_size, self.input_size, self.b, self.W_h = n, net.input_size, net.b, net.W_h
