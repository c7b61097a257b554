"""BPTT: the exact gradient of the training objective, through every path in time."""
from modules.rules import register
from modules.rules.base import Estimate, Rule


@register
class BPTT(Rule):
    name = "bptt"
    exact = True
    surrogate_is_objective = True  # alignment reuses the exact gradient (tests/test_alignment.py checks they agree)

    def surrogate(self, net, batch, objective, noise=None):
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
