"""Step-length-matched BPTT (the control of the study's Fig. 4): the exact gradient of W_h, W_x and b
multiplied by `rho`; the readout keeps its exact gradient like in every rule.

rho comes from `rule.rho`, or from an earlier run's summary.json (`rule.rho_from=<run dir>`, its rho_mean).
Autograd form: the exact network, with gradients scaled by rho where r enters the readout and where W_h,
W_x enter the L2 term (ScaleGrad: identity forward, rho x backward). One forward and one backward, like
BPTT; the surrogate's value is the loss.
"""
import json
from pathlib import Path

import torch

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


class ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


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
        y_hat = net.readout(ScaleGrad.apply(r, self.rho))   # everything upstream of r gets rho x its gradient
        _, y, mask = batch
        scaled = [ScaleGrad.apply(net.W_x, self.rho), ScaleGrad.apply(net.W_h, self.rho)]
        loss = objective(y_hat, y, mask, [*scaled, net.W_out])  # W_out: exact gradient, like every rule
        return Estimate(loss, loss, y_hat)
