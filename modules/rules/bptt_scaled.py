"""Step-length-matched BPTT (the control of the study's Fig. 4): the exact gradient of W_h, W_x and b
multiplied by rho; the readout keeps its exact gradient like in every rule.

rho comes from `rule.rho`, or from an earlier run's record (`rule.rho_from=<run dir or glob matching one
run dir>`, its summary.json):

    rho_mode=mean     rho = that run's rho_mean, at every step
    rho_mode=history  rho(step) = the last rho that run measured at or before `step` (its first value before
                      that): the control follows the bio rule's step length through training (e-prop's rho
                      falls from ~0.75 to ~0.1 on dms, so a constant mean over-steps late in training)

The history is copied into buffers at construction, so a checkpoint carries it and a resume is exact even if
the source record changes. `rule.rho_wait_s` > 0 waits that long for the source record to appear (a study
sweep runs the control after the bio rule it follows, in the same multirun).

Autograd form: the exact network, with gradients scaled by rho where r enters the readout and where W_h,
W_x enter the L2 term (ScaleGrad: identity forward, rho x backward). One forward and one backward, like
BPTT; the surrogate's value is the loss.
"""
from __future__ import annotations

import math

import torch

from modules import run_records as records
from modules.rules import register
from modules.rules.base import Estimate, FollowsHistory, Rule

RHO_MODES = ("mean", "history")


def find_record(run_dir: str, wait_s: float = 0.0) -> dict:
    """The summary.json of the one finished run that `run_dir` names (modules/run_records.find_record)."""
    return records.find_record(run_dir, "rule.rho_from", wait_s)


def rho_from_run(run_dir: str, wait_s: float = 0.0) -> float:
    """The mean rho recorded in <run_dir>/summary.json."""
    rho = find_record(run_dir, wait_s).get("rho_mean")
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not math.isfinite(rho):
        raise ValueError(f"rule.rho_from: '{run_dir}' has no rho_mean (was alignment measured in that run?)")
    return float(rho)


def rho_history_from_run(run_dir: str, wait_s: float = 0.0) -> list[tuple[int, float]]:
    """The [(step, rho), ...] history recorded in <run_dir>/summary.json (finite values only)."""
    return records.recorded_history(run_dir, "rho", "rule.rho_from", wait_s)


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
class ScaledBPTT(FollowsHistory, Rule):
    name = "bptt_scaled"

    def __init__(self, net, rho: float | None = None, rho_from: str | None = None, rho_mode: str = "mean",
                 rho_wait_s: float = 0.0):
        super().__init__(net)
        if rho_mode not in RHO_MODES:
            raise ValueError(f"rule.rho_mode={rho_mode!r}; choose one of: {', '.join(RHO_MODES)}")
        if rho is None and rho_from is None:
            raise ValueError("rule=bptt_scaled needs rule.rho=<float> or rule.rho_from=<run dir>")
        if rho is not None:  # an explicit rho wins
            points = [(0, float(rho))]
        elif rho_mode == "mean":
            points = [(0, rho_from_run(rho_from, rho_wait_s))]
        else:
            points = rho_history_from_run(rho_from, rho_wait_s)
        self.rho_mode = rho_mode if rho is None else "mean"
        self.register_history("rho", points)
        if rho is None:  # a control that follows a run that did not end ok says so (log and summary.json)
            status = records.find_record(rho_from, "rule.rho_from", rho_wait_s).get("status")
            if status != "ok":
                self.warnings.append(f"rule.rho_from={rho_from}: that run ended {status!r}; this run follows its "
                                     "rho as recorded, up to where it stopped")

    @property
    def rho(self) -> float:
        """rho at the current step."""
        return self.rho_at(self.step)

    def rho_at(self, step: int) -> float:
        """The last recorded rho at or before `step` (the first one before any)."""
        return self.history_value("rho", step)

    def surrogate(self, net, batch, objective, noise=None):
        rho = self.rho
        r = net.rates(batch[0], noise=noise)
        y_hat = net.readout(ScaleGrad.apply(r, rho))   # everything upstream of r gets rho x its gradient
        _, y, mask = batch
        scaled = [ScaleGrad.apply(net.W_x, rho), ScaleGrad.apply(net.W_h, rho)]
        loss = objective(y_hat, y, mask, [*scaled, net.W_out])  # W_out: exact gradient, like every rule
        return Estimate(loss, loss, y_hat)
