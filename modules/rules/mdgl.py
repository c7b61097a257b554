"""MDGL (multidigraph learning): e-prop plus one extra step of credit carried by cell-type-specific
modulatory signals through the type-averaged recurrent weights W_bar:

    Ltilde_{p,t} = L_{p,t} + alpha * sum_j W_bar[j, p] psi_{j,t+1} L_{j,t+1}      (no extra term at t = T)
    grad W_h[p, q] = sum_t Ltilde_{p,t} e_{pq,t}                                (e_t as in e-prop)

W_bar[j, p] is the mean of the effective W_h over existing connections (no autapses) from p's type to
j's type, signed. The extra term uses the readout-only L_{t+1}: one step, never recursive.

Autograd form: surrogate = loss + sum_t <stopgrad(extra_t), r_t> on the truncated network.
"""
import logging

import torch

from modules.rules import register
from modules.rules.base import Estimate, Rule


def block_means(w: torch.Tensor, types: torch.Tensor, n_types: int, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K x K) means of each (post type, pre type) block of w (post x pre) over entries where mask is 1,
    and the (N x K) one-hot type matrix."""
    onehot = torch.nn.functional.one_hot(types, n_types).to(w.dtype)  # (N, K)
    block_sum = onehot.T @ (w * mask) @ onehot
    block_cnt = onehot.T @ mask @ onehot
    return block_sum / block_cnt.clamp_min(1.0), onehot


def type_averaged(w: torch.Tensor, types: torch.Tensor, n_types: int, mask: torch.Tensor) -> torch.Tensor:
    """W_bar: each (post type, pre type) block of w (post x pre) replaced by its mean over masked entries."""
    means, onehot = block_means(w, types, n_types, mask)
    return onehot @ means @ onehot.T


def rate_derivative(net, r: torch.Tensor) -> torch.Tensor:
    """psi = f'(h), written in terms of r = f(h) (every supported f is invertible where it matters)."""
    if net.activation == "relu":
        return (r > 0).to(r.dtype)
    if net.activation == "tanh":
        return 1.0 - r * r
    if net.activation == "softplus":
        return -torch.expm1(-r)  # sigmoid(h) = 1 - exp(-softplus(h))
    raise ValueError(f"no derivative for activation '{net.activation}'")


log = logging.getLogger("rulescape")
NEGLIGIBLE = 0.05  # |W_bar| / |W_h| below this: MDGL's extra signal is too small to matter


def modulation_ratio(net) -> float:
    """|W_bar|_F / |W_h|_F of the effective recurrent weights: how much of W_h the cell types carry."""
    w = net.recurrent_weight().detach()
    w_bar = type_averaged(w, net.types, net.n_cell_types, net.no_autapse)
    return float(w_bar.norm() / w.norm().clamp_min(1e-30))


@register
class MDGL(Rule):
    name = "mdgl"

    def __init__(self, net):
        super().__init__(net)
        ratio = modulation_ratio(net)
        if ratio < NEGLIGIBLE:  # e.g. without Dale's law: random signs average out within each block
            message = (f"mdgl: cell-type-averaged weights are negligible (|W_bar|/|W_h| = {ratio:.3f} < "
                       f"{NEGLIGIBLE}), so MDGL is nearly e-prop here; use model.dale=true for E/I types")
            log.warning(message)
            self.warnings.append(message)

    def modulatory_weight(self, net) -> torch.Tensor:
        """W_bar (N x N), for inspection; the update uses its rank-K factorisation."""
        return type_averaged(net.recurrent_weight().detach(), net.types, net.n_cell_types, net.no_autapse)

    def surrogate(self, net, batch, objective, noise=None):
        y_hat, r = net(batch[0], truncation="recurrent", noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        (delta,) = torch.autograd.grad(loss, y_hat, retain_graph=True)
        # L_{t+1} is zero unless some trial carries loss at step t + 1: work on those steps s = t + 1 only
        # (dms and seqmnist: the last step), which leaves out exact zeros and nothing else
        steps = batch[2].reshape(batch[2].shape[0], -1).any(0).nonzero().flatten()
        steps = steps[steps > 0]
        with torch.no_grad():
            # W_bar = onehot M onehot^T has rank K, so the extra signal is constant within a type:
            # extra_t = onehot c_t with c_t = alpha (a_{t+1} onehot) M, a = psi * L. Work in (B, S, K).
            means, onehot = block_means(net.recurrent_weight().detach(), net.types, net.n_cell_types,
                                        net.no_autapse)
            signal = delta[:, steps] @ net.W_out                          # L_{t+1}, (B, S, N)
            a_type = signal.mul_(rate_derivative(net, r[:, steps])) @ onehot  # sum of psi L per type
            c = net.alpha * (a_type @ means)                             # (B, S, K)
            # extra_t = onehot c_t, i.e. c_t[type of unit]: a product with the one-hot matrix, not a gather:
            # exact (each entry is one c times 1 plus zeros) and ~10x faster than index_select on the last dim
            extra = c @ onehot.T
        # <extra_t, r_t>: its gradient w.r.t. r_t is exactly extra_t (and zero at the steps left out).
        return Estimate(loss + (extra * r[:, steps - 1]).sum(), loss, y_hat)
