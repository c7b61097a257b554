"""λ1 at equal training steps (issue 23): the matched point lets slow rules train longer, and λ1 rises with
training, so each pair of runs (same seed, two arms) is also compared at a step both reached.

For a pair, the common step is the smaller of the two runs' last λ1 measurement steps; each run's value is
its last λ1 at or before that step, from a measurement after initialisation (step > 0: at step 0 two arms of
one seed have the same network). A pair where one run has no such measurement is left out (counted).
"""
from __future__ import annotations

import math

from analysis.load import Run
from analysis.pairing import seed_of


def last_at_or_before(run: Run, step: float) -> tuple[float, float] | None:
    """(step, λ1) of the run's last positive λ1 measurement at 0 < s <= step, or None."""
    pts = [(s, v) for s, v in run.history("lambda_max") if 0 < s <= step and v > 0]
    return pts[-1] if pts else None


def last_step(run: Run) -> float | None:
    pts = run.history("lambda_max")
    return pts[-1][0] if pts else None


def paired_log_lambda(a: list[Run], b: list[Run]) -> tuple[list[float], list[float], list[float], int]:
    """(log λ1 of a, log λ1 of b, common steps, pairs left out) at each seed pair's common step."""
    by_seed_b = {}
    for r in b:
        by_seed_b.setdefault(seed_of(r), r)
    xa, xb, steps, dropped = [], [], [], 0
    for ra in a:
        s = seed_of(ra)
        rb = by_seed_b.get(s)
        if s is None or rb is None:
            continue
        la, lb = last_step(ra), last_step(rb)
        if la is None or lb is None:
            dropped += 1
            continue
        common = min(la, lb)
        pa, pb = last_at_or_before(ra, common), last_at_or_before(rb, common)
        if pa is None or pb is None:
            dropped += 1
            continue
        xa.append(math.log(pa[1]))
        xb.append(math.log(pb[1]))
        steps.append(common)
        by_seed_b.pop(s)
    return xa, xb, steps, dropped


def common_step(runs: list[Run]) -> float | None:
    """The largest step every run reached (the smallest last λ1 step): for unpaired comparisons."""
    steps = [last_step(r) for r in runs]
    steps = [s for s in steps if s is not None]
    return min(steps) if steps else None


def unpaired_log_lambda(runs: list[Run], step: float) -> list[float]:
    out = []
    for r in runs:
        p = last_at_or_before(r, step)
        if p is not None:
            out.append(math.log(p[1]))
    return out
