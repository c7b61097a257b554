"""ModProp (Liu, Smith, Mihalas, Shea-Brown & Sumbul, NeurIPS 2022, arXiv 2206.01338): MDGL's successor, credit
carried over arbitrary time spans by cell-type-specific modulatory signals through fixed temporal filters.

Exact BPTT for this network, with gh_t = dL/dh_t, L_t = W_out^T delta_t and psi_t = f'(h_t):

    gh_t = psi_t * (L_t + a W_h^T gh_{t+1}) + (1 - a) gh_{t+1}

ModProp makes two approximations in the nonlocal (recurrent) term only; the local term psi_t * L_t and the leak
stay exact:
    1. the feedback weights W_h^T become the cell-type-averaged W_bar^T (signed block means of the effective
       W_h over existing connections, as MDGL's; zero diagonal, as the network's);
    2. the receiving unit's activation derivative psi_t becomes a constant mu (`rule.mu`).

    gh_t = psi_t * L_t + K^T gh_{t+1}           K = (1 - a) I + a mu W_bar
         = sum_{s >= 0} (K^T)^s (psi_{t+s} * L_{t+s})
    grad W_h[p, q] = a sum_t gh_{t,p} r_{t-1,q}  (W_x with x_t, b with 1)

The second line is ModProp's reading: K depends on the weights only through the few type-block means, so
(K^T)^s are cell-type-specific filter taps applied to the units' local credit psi * L, a signal a
neuromodulator could carry; the recursion on the first line is the same sum, computed backwards in O(B T N^2).
mu = 0 is e-prop exactly; on a network without Dale's law W_bar ~ 0 and ModProp is nearly e-prop (warned, as
for MDGL). The readout and the L2 term get exact gradients.

Choices, from the authors' public code (github.com/Helena-Yuhan-Liu/ModProp, TF1) and where it is silent:
  - the definition above is the code's autodiff: the presynaptic rate in the recurrent input gets the
    custom derivative mu (`actFunction`), the readout path keeps the true one, and the backward recurrent
    weights are the type-averaged ones (`MDGLpp_mode=3`, two types E/I). Their code swaps the weights by
    assigning W_bar to the recurrent variable around the gradient computation; here only the backward pass
    uses W_bar, the forward pass stays the exact network (SPEC section 4);
  - mu defaults to 0.25, their delayed-XOR default (`custom_mode=-2.5`, mu = 0.1 x 2.5); the README warns that
    training is sensitive to mu (K's spectral radius must stay below 1 for the filter to decay);
  - the block means are over existing connections (off-diagonal), as in this project's MDGL; theirs include
    the zero diagonal in the mean (a factor (n - 1)/n on the diagonal blocks);
  - no truncation of the filter (their MDGL++ buffer length `MDGL_buflen=-1`, full length).
"""
import logging

import torch

from modules.rules import register
from modules.rules.base import Estimate, Rule
from modules.rules.mdgl import NEGLIGIBLE, modulation_ratio, type_averaged
from modules.rules.rtrl import online_pass, presynaptic, with_estimate

log = logging.getLogger("rulescape")


@torch.no_grad()
def modprop_gradient(net, c: torch.Tensor, z: torch.Tensor, mu: float) -> torch.Tensor:
    """a sum_t gh_t z_t^T over the batch, (N, Z), with gh_t = c_t + K^T gh_{t+1}; c (B, T, N), z (B, T, Z)."""
    alpha, n = net.alpha, net.hidden_size
    w_bar = type_averaged(net.recurrent_weight().detach(), net.types, net.n_cell_types, net.no_autapse)
    k = (1.0 - alpha) * torch.eye(n, dtype=c.dtype, device=c.device) + alpha * mu * (w_bar * net.no_autapse)
    gh = torch.zeros_like(c[:, 0])
    credit = torch.empty_like(c)
    for t in reversed(range(c.shape[1])):
        gh = c[:, t] + gh @ k                  # row vectors: (K^T g)^T = g^T K
        credit[:, t] = gh
    return alpha * credit.flatten(0, 1).T @ z.flatten(0, 1)


@register
class ModProp(Rule):
    name = "modprop"

    def __init__(self, net, mu: float = 0.25):
        super().__init__(net)  # conf/rule/modprop.yaml explains the default
        if not (isinstance(mu, (int, float)) and 0 <= mu < float("inf")):
            raise ValueError(f"rule.mu={mu!r} is not allowed; it must be a number >= 0")
        self.mu = float(mu)
        ratio = modulation_ratio(net)
        if ratio < NEGLIGIBLE:
            message = (f"modprop: cell-type-averaged weights are negligible (|W_bar|/|W_h| = {ratio:.3f} < "
                       f"{NEGLIGIBLE}), so ModProp is nearly e-prop here; use model.dale=true for E/I types")
            log.warning(message)
            self.warnings.append(message)

    def surrogate(self, net, batch, objective, noise=None):
        x = batch[0]
        _, r, loss, y_hat, d_r, psi = online_pass(net, batch, objective, noise)
        grad = modprop_gradient(net, psi * d_r, presynaptic(net, r, x), self.mu)
        return Estimate(with_estimate(net, loss, grad), loss.detach(), y_hat.detach())
