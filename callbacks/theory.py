"""Theorem 1 of the reference, measured where it can be: at every curvature step k, from that step's
lambda_1 and the mean rho of the alignment measurements since the previous curvature step.

    theory/rho_window   = mean of align/rho over steps [k_prev, k): the updates that led from the previous
                          curvature point to this one (alignment at step s measures the update s -> s+1);
                          at the first curvature step (k = 0, no update yet) the rho measured at step 0
    theory/stability    = |rho_window| eta lambda_1(k)      below 1 at a stable SGD fixed point (Theorem 1);
                          plain gradient descent's classical bound on eta lambda_1 is 2
    theory/lambda_bound = 1 / (|rho_window| eta)            eta = the learning rate at step k

Both factors belong to the same stretch of training: a lambda_1 hundreds of steps old never meets a fresh
rho. Exact rules (bptt) have rho = 1 by definition, whether or not alignment is measured.
Must come after the curvature and alignment callbacks in the callback list (it reads their histories).
"""
from __future__ import annotations

import math

from callbacks.history import HistoryCallback, merged_history

LAMBDA_KEY, RHO_KEY = "curvature/lambda_max", "align/rho"


def window_rho(rho_points: list, previous: int | None, step: int) -> float | None:
    """Mean of the rho values measured at steps in [previous, step) (at steps <= step when previous is None)."""
    values = [v for s, v in rho_points if (s <= step if previous is None else previous <= s < step)]
    return sum(values) / len(values) if values else None


def stability(rho: float, eta: float, lambda_1: float) -> dict[str, float]:
    """Theorem 1's quantity and bound for one curvature step."""
    rho = abs(rho)
    bound = 1.0 / (rho * eta) if rho != 0 else math.inf
    return {"theory/rho_window": rho, "theory/stability": rho * eta * lambda_1, "theory/lambda_bound": bound}


class Theory(HistoryCallback):
    phase = "after"

    def __init__(self):
        super().__init__()
        self.every_n_steps = 0  # not periodic: due exactly when curvature measured this step

    @classmethod
    def from_config(cls, cfg) -> "Theory":
        return cls()

    def due(self, step: int, max_steps: int) -> bool:
        return step not in self.measured_steps

    def run(self, trainer, pl_module, batch=None) -> None:
        history = merged_history(trainer)
        lam = history.get(LAMBDA_KEY) or []
        if not lam or lam[-1][0] != trainer.global_step:
            return  # no curvature measurement at this step
        super().run(trainer, pl_module, batch)

    def measure(self, trainer, pl_module, batch=None) -> dict[str, float]:
        history = merged_history(trainer)
        step, lambda_1 = history[LAMBDA_KEY][-1]
        earlier = [s for s, _ in history[LAMBDA_KEY][:-1] if s < step]
        if getattr(pl_module.rule, "exact", False):
            rho = 1.0
        else:
            rho = window_rho(history.get(RHO_KEY) or [], earlier[-1] if earlier else None, step)
        if rho is None:  # alignment off, or not measured in this window
            return {}
        return stability(rho, pl_module.lr, lambda_1)
