"""The learning rate divided by another run's mean alignment: e-prop at eta / rho_bar (issue 23), whose step
along the gradient, rho_bar * eta / rho_bar = eta, matches BPTT's. Does it then reach BPTT's flatness and
gap, or diverge (the reference's prediction)?

rho_bar is the mean rho (`rho_mean`) of the run that `rho_from` names (a run dir or a glob naming one; in a
study sweep the e-prop run of the same seed, waited for up to `rho_wait_s` seconds), read when the config is
built so that a missing or unusable record is one line and exit 2, like bptt_scaled's rho_from. The factor
1 / rho_bar applies to every parameter group (the readout's too: "the learning rate divided by rho_bar").
theory/* reads the optimizer's learning rate, so Theorem 1's quantities use eta / rho_bar; summary.json's `lr`
stays the configured eta.
"""
from __future__ import annotations

import functools
import math

from torch.optim.lr_scheduler import LambdaLR

from modules.rules.bptt_scaled import rho_from_run


class OverRho(LambdaLR):
    """A constant factor 1 / rho on the learning rate. `rho` is saved with the scheduler's state (a resume keeps
    the factor it started with, whatever the source record says by then)."""

    def __init__(self, optimizer, rho: float):
        self.rho = float(rho)
        super().__init__(optimizer, lambda _step: 1.0 / self.rho)


def over_rho(rho_from: str | None = None, rho_wait_s: float = 0.0, rho: float | None = None):
    """optimizer -> OverRho, with rho read now from rho_from's record (or given: `rho` wins)."""
    if rho is None:
        if not rho_from:
            raise ValueError("scheduler=over_rho needs scheduler.rho_from=<run dir> or scheduler.rho=<number>")
        rho = rho_from_run(rho_from, rho_wait_s)
    if not math.isfinite(float(rho)) or float(rho) <= 0:
        raise ValueError(f"scheduler=over_rho: rho_bar={rho!r} (from {rho_from or 'scheduler.rho'}) must be > 0 "
                         "and finite (a rule whose mean rho is not positive has no step along the gradient to match)")
    return functools.partial(OverRho, rho=float(rho))
