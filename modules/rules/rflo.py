"""RFLO ("RF three-factor"): e-prop's truncation with a fixed random feedback matrix B (N x N_out) in
place of W_out^T in the learning signal, L_t = B delta_t.

B's direction is drawn once per run from the seeded RNG (a checkpointed buffer, entries N(0, 1/N)). Its
length follows a stated principle, `feedback_norm`:

    readout (default)  B_eff = feedback_scale * |W_out|_F / |B|_F * B     at every step
    fixed              B_eff = feedback_scale * B                         (Murray 2019's fixed B; the scale
                                                                          of its entries is feedback_scale/sqrt(N))

Why "readout": RFLO should differ from e-prop in the *direction* of its feedback only. With a fixed B the
exact readout grows during training (|W_out| from ~0.1 to ~7 on dms) while B does not, so the W_h update
shrinks to a few percent of the gradient's length (align/norm_ratio ~0.02) although its cosine with the
gradient stays as high as e-prop's: the rule then barely trains W_h, which is not what it is about.
Tying |B| to |W_out| keeps the learning signal from vanishing; only a scalar gain is shared, the feedback
pathway stays random and fixed. The fraction, feedback_scale = 0.3, is the largest that trains stably: at 1.0
(as long as e-prop's signal) every dms run diverged, because RFLO's update points against the gradient for
its first ~1,000 steps (cos ~ -0.3 to -0.6) before feedback alignment sets in (README has the sweep).

The readout still gets its exact gradient: only the signal sent back into the network is B_eff delta.
"""
import math

import torch
from torch.nn import functional as F

from modules.rules import register
from modules.rules.base import Estimate, Rule

FEEDBACK_NORMS = ("readout", "fixed")


class FeedbackReadout(torch.autograd.Function):
    """y = r W_out^T + b_out; backward sends delta B^T into r and exact gradients into W_out, b_out."""

    @staticmethod
    def forward(ctx, r, w_out, b_out, feedback):
        ctx.save_for_backward(r, feedback)
        return F.linear(r, w_out, b_out)

    @staticmethod
    def backward(ctx, grad_y):
        r, feedback = ctx.saved_tensors
        grad_r = grad_y @ feedback.T
        grad_w = grad_y.reshape(-1, grad_y.shape[-1]).T @ r.reshape(-1, r.shape[-1])
        grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0)
        return grad_r, grad_w, grad_b, None


@register
class RFLO(Rule):
    name = "rflo"

    def __init__(self, net, feedback_scale: float = 0.3, feedback_norm: str = "readout"):
        super().__init__(net)  # conf/rule/rflo.yaml explains the defaults
        if feedback_norm not in FEEDBACK_NORMS:
            raise ValueError(f"rule.feedback_norm={feedback_norm!r}; choose one of: {', '.join(FEEDBACK_NORMS)}")
        if not (math.isfinite(feedback_scale) and feedback_scale > 0):
            raise ValueError(f"rule.feedback_scale={feedback_scale!r} is not allowed; it must be a number > 0")
        self.feedback_scale, self.feedback_norm = float(feedback_scale), feedback_norm
        n, n_out = net.hidden_size, net.output_size
        feedback = torch.randn(n, n_out, dtype=net.W_out.dtype) / math.sqrt(n)
        self.register_buffer("feedback", feedback.to(net.W_out.device))

    def feedback_matrix(self, net) -> torch.Tensor:
        """B_eff (N x N_out), the matrix the learning signal goes through at the current weights."""
        if self.feedback_norm == "fixed":
            return self.feedback_scale * self.feedback
        gain = self.feedback_scale * net.W_out.detach().norm() / self.feedback.norm()
        return gain * self.feedback

    def surrogate(self, net, batch, objective, noise=None):
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = FeedbackReadout.apply(r, net.W_out, net.b_out, self.feedback_matrix(net))
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
