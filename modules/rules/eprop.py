"""Symmetric e-prop ("three-factor"): cut every path where r_{t-1} reaches h_t through W_h, keep the leak.

With eligibility traces (for W_h; W_x alike with x_t in place of r_{t-1}):

    eps_t = (1 - alpha) eps_{t-1} + alpha r_{t-1}       e_t = psi_t * eps_t        psi_t = f'(h_t)
    grad W_h[p, q] = sum_t L_{p,t} e_{pq,t}             L_t = W_out^T delta_t,  delta_t = dLoss/dy_t

Through autograd this is a stop-gradient on r_{t-1} inside W_h r_{t-1}: backward then carries exactly
the learning signal L_t into r_t and the leak (1 - alpha) between h's, which is the trace recursion.
"""
from modules.rules import register
from modules.rules.base import Estimate, Rule


@register
class EProp(Rule):
    name = "eprop"

    def surrogate(self, net, batch, objective, noise=None):
        y_hat, _ = net(batch[0], truncation="recurrent", noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
