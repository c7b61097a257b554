"""RFLO ("RF three-factor"): e-prop's truncation with a fixed random feedback matrix B (N x N_out) in
place of W_out^T in the learning signal, L_t = B delta_t.

B ~ N(0, feedback_scale^2 / N), drawn once per run from the seeded RNG and kept as a checkpointed buffer.
The readout still gets its exact gradient: only the signal sent back into the network is B delta.
"""
import math

import torch
from torch.nn import functional as F

from modules.rules import register
from modules.rules.base import Estimate, Rule


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

    def __init__(self, net, feedback_scale: float = 0.3):  # conf/rule/rflo.yaml explains the default
        super().__init__(net)
        n, n_out = net.hidden_size, net.output_size
        feedback = torch.randn(n, n_out, dtype=net.W_out.dtype) * (feedback_scale / math.sqrt(n))
        self.register_buffer("feedback", feedback.to(net.W_out.device))

    def surrogate(self, net, batch, objective, noise=None):
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = FeedbackReadout.apply(r, net.W_out, net.b_out, self.feedback)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
