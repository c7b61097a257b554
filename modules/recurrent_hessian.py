"""Hessian-vector products of the training objective w.r.t. W_h, written out by hand (Pearlmutter's
R-operator) for the leaky rate RNN of modules/rnn.py: the same H v as reverse-over-reverse autograd, with
fewer and larger matrix products and no graph.

Notation (row vectors per trial, as in the code; W the effective recurrent weight, post x pre):

    u_t = drive_t + r_{t-1} W^T      h_t = (1 - a) h_{t-1} + a u_t      r_t = f(h_t)      y_t = r_t W_out^T + b_out
    psi_t = f'(h_t), psi2_t = f''(h_t); delta_t = dLoss/dy_t
    backward:  gr_t = delta_t W_out + a gh_{t+1} W          gh_t = psi_t * gr_t + (1 - a) gh_{t+1}
    gradient:  G = a sum_{b,t} gh_t^T r_{t-1}

A direction V of W (effective: V = D * V_param, D = dW/dW_param: the no-autapse mask, times sign(W_param)
and the presynaptic sign under Dale's law) perturbs every quantity to first order (R{.}):

    R-forward:   Ru_t = r_{t-1} V^T + Rr_{t-1} W^T    Rh_t = (1 - a) Rh_{t-1} + a Ru_t    Rr_t = psi_t * Rh_t
                 Rdelta_t = l''(y_t) (Rr_t W_out^T)   (cross-entropy: w (p * Ry - p (p . Ry)); MSE: w 2 Ry / K)
    R-backward:  Rgr_t = Rdelta_t W_out + a (Rgh_{t+1} W + gh_{t+1} V)
                 Rgh_t = psi_t * Rgr_t + psi2_t * Rh_t * gr_t + (1 - a) Rgh_{t+1}
    H v:         D * a sum_{b,t} (Rgh_t^T r_{t-1} + gh_t^T Rr_{t-1})  +  l2 V_param

(W = D * W_param is piecewise linear in W_param, so it adds no second-order term; the L2 regulariser adds
l2 V_param.) Cost per product: two (B x N)(N x N) products per time step (the recursions) and four
(BT x N)(N x N) products outside the loop (r V^T, gh V and the two halves of the result), against about
eight per time step for autograd's double backward. The forward and backward pass of the linearisation
keep only (B, T, N) states. Several directions at once (matmat) share every pass.

tests/test_curvature.py checks it against torch.func's reverse-over-reverse products and a dense Hessian
(every activation, both losses, Dale's law, alpha = 1, L2, masks that differ per trial).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from modules.objective import LOSSES
from modules.rules.rtrl import rollout

ACTIVATIONS = ("relu", "tanh", "softplus")


def supported(net, objective) -> bool:
    """Whether the hand-written products cover this network and objective (else use autograd's)."""
    return getattr(net, "activation", None) in ACTIVATIONS and getattr(objective, "loss", None) in LOSSES


def slopes(net, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """f'(h) and f''(h) (None where f'' is zero), as autograd differentiates the activation: relu's slope
    at 0 is 0; softplus is linear above its threshold (20)."""
    if net.activation == "relu":
        return (h > 0).to(h.dtype), None
    if net.activation == "tanh":
        r = torch.tanh(h)
        psi = 1.0 - r * r
        return psi, -2.0 * r * psi
    sig = torch.sigmoid(h)
    linear = h > 20.0
    return sig.masked_fill(linear, 1.0), (sig * (1.0 - sig)).masked_fill(linear, 0.0)


class RecurrentHessian:
    """H = d^2 objective / d W_h^2 at the network's weights when built, on a fixed batch, exact noiseless network.

    matmat(V): (m, N, N) directions of the stored W_h -> (m, N, N) products; `gradient` (N, N) the objective's
    gradient w.r.t. W_h. Weights are copied when built (a later optimizer step is not seen)."""

    def __init__(self, net, objective, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        with torch.no_grad():
            self._linearise(net, objective, batch)

    def _linearise(self, net, objective, batch) -> None:
        x, y, mask = batch
        a = float(net.alpha)
        self.alpha, self.l2 = a, float(objective.l2)
        w_param = net.W_h.detach()
        self.w = net.recurrent_weight().detach().clone()
        jac = net.no_autapse.to(w_param.dtype)
        if net.dale:
            jac = jac * torch.sign(w_param) * net.pre_sign
        self.jac = jac
        self.w_out = net.W_out.detach().clone()
        bsz, steps = x.shape[0], x.shape[1]

        h_all, r_all = rollout(net, x)  # the exact noiseless forward pass, states kept (B, T, N)
        self.r_prev = torch.cat([r_all.new_zeros(bsz, 1, net.hidden_size), r_all[:, :-1]], 1)  # r_{t-1}
        self.psi, self.psi2 = slopes(net, h_all)
        y_hat = r_all @ self.w_out.T + net.b_out.detach()

        weight = (mask / mask.sum()).to(y_hat.dtype)[..., None]  # each loss step's share of the mean
        if objective.loss == "ce":
            self.p = torch.softmax(y_hat, -1)
            delta = weight * (self.p - F.one_hot(y, y_hat.shape[-1]).to(y_hat.dtype))
            self.curv_weight = weight
        else:
            k = y_hat.shape[-1]
            self.p = None
            delta = weight * 2.0 * (y_hat - y) / k
            self.curv_weight = weight * 2.0 / k

        readout_signal = delta @ self.w_out  # (B, T, N)
        gh_next = x.new_zeros(bsz, net.hidden_size)
        grs, ghs = [None] * steps, [None] * steps
        for t in range(steps - 1, -1, -1):
            gr = readout_signal[:, t] + a * (gh_next @ self.w)
            gh = self.psi[:, t] * gr + ((1.0 - a) * gh_next if a != 1.0 else 0.0)
            grs[t], ghs[t] = gr, gh
            gh_next = gh
        self.gh = torch.stack(ghs, 1)
        self.gh_next = torch.cat([self.gh[:, 1:], self.gh.new_zeros(bsz, 1, net.hidden_size)], 1)  # gh_{t+1}
        # psi2 * gr multiplies Rh in the second-order backward pass; zero for relu
        self.curv_state = None if self.psi2 is None else self.psi2 * torch.stack(grs, 1)
        self.gradient = self.jac * (a * _outer_sum(self.gh, self.r_prev)) + self.l2 * w_param
        self.loss_steps = [int(t) for t in mask.reshape(bsz, steps).any(0).nonzero().flatten()]

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        """H applied to each of the m directions v (m, N, N) of the stored W_h."""
        with torch.no_grad():
            return self._products(v)

    def _products(self, v_param: torch.Tensor) -> torch.Tensor:
        # Everything per time step: on a CPU the (B x N)(N x N) products run from cache at a higher rate than
        # the same work as one (BT x N)(N x N) product, and nothing of size (m, B, T, N) is assembled.
        a, w, psi, r_prev = self.alpha, self.w, self.psi, self.r_prev
        v = self.jac * v_param                                         # (m, N, N) effective directions
        v_t = v.transpose(1, 2)
        m, batch, steps = v.shape[0], psi.shape[0], psi.shape[1]
        rh = rr = psi.new_zeros(m, batch, psi.shape[2])                # Rh_{-1} = Rr_{-1} = 0
        rhs, rrs = [], []
        w_t = w.T.expand(m, -1, -1)
        for t in range(steps):  # in-place where a fresh tensor is already at hand: fewer passes over memory
            ru = torch.baddbmm(r_prev[:, t] @ v_t, rr, w_t)
            rh = ru if a == 1.0 else ru.mul_(a).add_(rh, alpha=1.0 - a)
            rr = psi[:, t] * rh
            rhs.append(rh)
            rrs.append(rr)
        # the readout's second-order term only where some trial has a loss step
        base = {}
        if self.loss_steps:
            rr_loss = torch.stack([rrs[t] for t in self.loss_steps], 2)  # (m, B, S, N)
            ry = rr_loss @ self.w_out.T
            weight = self.curv_weight[:, self.loss_steps]
            if self.p is not None:
                p = self.p[:, self.loss_steps]
                rdelta = weight * (p * ry - p * (p * ry).sum(-1, keepdim=True))
            else:
                rdelta = weight * ry
            signal = rdelta @ self.w_out
            base = {t: signal[:, :, i] for i, t in enumerate(self.loss_steps)}
        result = torch.zeros_like(v)
        rgh = torch.zeros_like(rh)                                     # Rgh_T = 0
        w_m = w.expand(m, -1, -1)
        for t in range(steps - 1, -1, -1):
            rgr = torch.baddbmm(self.gh_next[:, t] @ v, rgh, w_m).mul_(a)
            if t in base:
                rgr += base[t]
            new = rgr.mul_(psi[:, t])
            if self.curv_state is not None:
                new.addcmul_(self.curv_state[:, t], rhs[t])
            rgh = new if a == 1.0 else new.add_(rgh, alpha=1.0 - a)
            # a (Rgh_t^T r_{t-1} + gh_t^T Rr_{t-1}), accumulated step by step (r_{-1} = Rr_{-1} = 0)
            if t:
                result.baddbmm_(rgh.transpose(1, 2), r_prev[:, t].expand(m, -1, -1), alpha=a)
                result.baddbmm_(self.gh[:, t].T.expand(m, -1, -1), rrs[t - 1], alpha=a)
        return self.jac * result + self.l2 * v_param


def _outer_sum(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """sum over trials and steps of left_t^T right_t: (B, T, N) x (B, T, M) -> (N, M)."""
    return left.flatten(0, 1).T @ right.flatten(0, 1)
