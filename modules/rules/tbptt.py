"""Truncated BPTT: exact backpropagation inside windows of `window` steps; the recurrent state is
detached at every window boundary. window >= T equals BPTT; window = 1 keeps only the current step."""
from modules.rules import register
from modules.rules.base import Estimate, Rule


@register
class TBPTT(Rule):
    name = "tbptt"

    def __init__(self, net, window: int = 10):
        super().__init__(net)
        if int(window) < 1:
            raise ValueError(f"rule.window must be an integer >= 1, got {window}")
        self.window = int(window)

    def surrogate(self, net, batch, objective, noise=None):
        y_hat, _ = net(batch[0], truncation="window", window=self.window, noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)
