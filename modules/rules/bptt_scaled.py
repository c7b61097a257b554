"""Step-length-matched BPTT (the control of the study's Fig. 4): the exact gradient of W_h, W_x and b
multiplied by `rho`; the readout keeps its exact gradient like in every rule.

rho comes from `rule.rho`, or from an earlier run's summary.json (`rule.rho_from=<run dir>`, its rho_mean).
Surrogate: rho * L(readout(r)) + (1 - rho) * L_out(readout(stopgrad(r))), where L_out regularises W_out only.
"""
import json
from pathlib import Path

from modules.rules import register
from modules.rules.base import Estimate, Rule


def rho_from_run(run_dir: str) -> float:
    """The mean rho recorded in <run_dir>/summary.json."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"rule.rho_from: no summary.json in '{run_dir}'")
    rho = json.loads(path.read_text()).get("rho_mean")
    if rho is None:
        raise ValueError(f"rule.rho_from: '{path}' has no rho_mean (was alignment measured in that run?)")
    return float(rho)


@register
class ScaledBPTT(Rule):
    name = "bptt_scaled"

    def __init__(self, net, rho: float | None = None, rho_from: str | None = None):
        super().__init__(net)
        if rho is None and rho_from is None:
            raise ValueError("rule=bptt_scaled needs rule.rho=<float> or rule.rho_from=<run dir>")
        self.rho = float(rho) if rho is not None else rho_from_run(rho_from)

    def surrogate(self, net, batch, objective, noise=None):
        r = net.rates(batch[0], noise=noise)
        y_hat = net.readout(r)
        loss = self.objective_of(net, y_hat, batch, objective)
        _, y, mask = batch
        # value equal to `loss` up to the recurrent weights' L2 term; it gives the readout its exact gradient
        readout_only = objective(net.readout(r.detach()), y, mask, [net.W_out])
        return Estimate(self.rho * loss + (1.0 - self.rho) * readout_only, loss, y_hat)
