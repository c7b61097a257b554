"""Kolen-Pollack feedback (Kolen & Pollack 1994; Akrout et al. 2019): RFLO whose feedback matrix B learns
toward the readout. A rule that learns (modules/rules/base.py): B (N x N_out) is its own parameter.

Network's estimate: RFLO's, e-prop's truncation with the learning signal sent through B instead of W_out^T,

    L_t = B delta_t        eps_t = (1 - alpha) eps_{t-1} + alpha r_{t-1}        grad W_h[p, q] = sum_t L_{p,t} psi_{p,t} eps_{q,t}

(W_x and b alike); the readout gets its exact gradient G + l2 W_out, with G = sum_t delta_t r_t^T (N_out x N).

B's own objective and update (local: delta_t and r_t are the readout's own pre- and postsynaptic signals):

    aux = <B, G^T> + (decay / 2) |B|_F^2        dB = d aux / dB = G^T + decay B

B receives the readout's own data gradient, transposed, plus weight decay: the Kolen-Pollack update. Under
plain SGD with the network's lr (rule.lr = optimizer.lr, the default) and decay = l2, W_out^T and B take the
same steps, so W_out^T - B shrinks by (1 - lr decay) every step: B aligns with W_out^T by learning, and the
rule moves from RFLO (random B) toward e-prop (B = W_out^T). With decay = 0 (the l2 of seqmnist and pattern)
the difference keeps its initial value while the readout grows, so the alignment comes from that growth.
With another network optimizer (Adam) the two no longer take identical steps (stated, not corrected).

B starts as RFLO's: a random direction (N(0, 1/N) entries, drawn from the seeded RNG) with the length of the
initial readout, |B|_F = |W_out|_F, so its first updates are as long as e-prop's would be.
"""
import math

import torch

from modules.rules import register
from modules.rules.base import Estimate, Rule
from modules.rules.rflo import FeedbackReadout


@register
class KolenPollack(Rule):
    name = "kolen_pollack"
    learns = True

    def __init__(self, net, lr: float = 0.1, optimizer: str = "sgd", decay: float = 0.0):
        super().__init__(net)  # conf/rule/kolen_pollack.yaml explains the defaults
        if not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"rule.decay={decay!r} is not allowed; it must be a number >= 0")
        self.decay = float(decay)
        self.learn_with(lr, optimizer)
        n, n_out = net.hidden_size, net.output_size
        feedback = torch.randn(n, n_out, dtype=net.W_out.dtype) / math.sqrt(n)
        feedback *= net.W_out.detach().norm().cpu() / feedback.norm()
        self.feedback = torch.nn.Parameter(feedback.to(net.W_out.device))

    def surrogate(self, net, batch, objective, noise=None):
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = FeedbackReadout.apply(r, net.W_out, net.b_out, self.feedback.detach())
        loss = self.objective_of(net, y_hat, batch, objective)
        _, y, mask = batch
        with torch.enable_grad():
            y_leaf = y_hat.detach().requires_grad_(True)
            (delta,) = torch.autograd.grad(objective.data_loss(y_leaf, y, mask), y_leaf)  # (B, T, N_out)
        readout_grad = torch.einsum("btk,btn->nk", delta, r.detach())                    # G^T (N, N_out)
        aux = (self.feedback * readout_grad).sum() + 0.5 * self.decay * self.feedback.pow(2).sum()
        return Estimate(loss, loss, y_hat, aux_loss=aux)
