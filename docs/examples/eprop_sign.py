"""Sign-concordant e-prop (the worked example of docs/add-a-rule.md; not in the registry until you copy it
into modules/rules/): e-prop's truncation with the learning signal sent back through the *signs* of the
readout instead of the readout itself,

    L_t = B delta_t,     B = sign(W_out^T) * |W_out|_F / |sign(W_out)|_F        (N x N_out)

i.e. a feedback pathway that only agrees with the readout in sign (Liao, Leibo & Poggio 2016's
sign-concordant feedback), scaled to the readout's length so that the update is as long as e-prop's would be
with a feedback of the same size. B follows W_out's signs at every step and holds no state of its own.
The readout still gets its exact gradient (rflo.FeedbackReadout sends B delta into r, exact gradients into
W_out and b_out).
"""
from modules.rules import register
from modules.rules.base import Estimate, Rule
from modules.rules.rflo import FeedbackReadout


@register
class EPropSign(Rule):
    name = "eprop_sign"

    def feedback_matrix(self, net):
        """B (N x N_out): the readout's signs, as long as the readout (Frobenius norm)."""
        w = net.W_out.detach()
        signs = w.sign().T
        return signs * (w.norm() / signs.norm().clamp_min(1e-30))

    def surrogate(self, net, batch, objective, noise=None):
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = FeedbackReadout.apply(r, net.W_out, net.b_out, self.feedback_matrix(net))
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
