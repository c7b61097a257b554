"""λ1 at equal training steps: the matched point lets slow rules train longer, and λ1 rises with training, so
each pair of runs (same seed, two arms) is also compared at exactly one step both reached.

For a pair, the common step is the earlier of the two runs' stops (each record's `steps`). A run measures λ1
there when it is its own stop (the final measurement) or when it was told that step in advance
(`curvature.at_steps_from`: a study's rule arm measures λ1 where its seed's BPTT run stopped): then the pair is
compared at exactly equal steps ("exact"). A record without a measurement at that step (records made before
at_steps_from existed) gets the value interpolated linearly in log λ1 between its measurements just before
and just after the step ("interpolated", counted in the row); a pair with neither (no measurement after
step 0 on one side of the step) is left out and counted. Step 0 never counts: at step 0 two arms of one seed
have the same network.
"""
from __future__ import annotations

import bisect
import math

from analysis.load import Run
from analysis.pairing import seed_of


def stop_step(run: Run) -> float | None:
    """The step the run ended at: its record's `steps`, else its last λ1 step."""
    steps = run.value("steps")
    if steps is not None:
        return steps
    pts = run.history("lambda_max")
    return pts[-1][0] if pts else None


def log_lambda_at(run: Run, step: float) -> tuple[float, bool] | None:
    """(log λ1 at `step`, measured exactly there) from the run's positive λ1 history after step 0: the value
    measured at that step, else interpolated linearly in log λ1 between the measurements around it, else None."""
    pts = [(s, math.log(v)) for s, v in run.history("lambda_max") if s > 0 and v > 0]
    steps = [s for s, _ in pts]
    i = bisect.bisect_left(steps, step)
    if i < len(pts) and steps[i] == step:
        return pts[i][1], True
    if 0 < i < len(pts):
        (s0, v0), (s1, v1) = pts[i - 1], pts[i]
        return v0 + (v1 - v0) * (step - s0) / (s1 - s0), False
    return None


class EqualSteps:
    """The paired comparison at each pair's common step: values, steps and how they were obtained."""

    def __init__(self):
        self.x: list[float] = []
        self.y: list[float] = []
        self.steps: list[float] = []
        self.exact = 0          # pairs with λ1 measured at the common step in both runs
        self.interpolated = 0   # pairs where at least one value is interpolated in log λ1
        self.dropped = 0        # pairs with no value on one side

    def note(self) -> str:
        """"; 4 exact, 6 interpolated in log λ1; 1 pair left out" (the parts that apply)."""
        parts = [f"{self.exact} at exactly equal steps"] if self.exact else []
        if self.interpolated:
            parts.append(f"{self.interpolated} interpolated in log λ1")
        if self.dropped:
            parts.append(f"{self.dropped} pair(s) without a λ1 around their common step left out")
        return ("; " + ", ".join(parts)) if parts else ""


def paired_log_lambda(a: list[Run], b: list[Run]) -> EqualSteps:
    """log λ1 of a and of b at each seed pair's common step (the earlier of the two stops)."""
    by_seed_b = {}
    for r in b:
        by_seed_b.setdefault(seed_of(r), r)
    out = EqualSteps()
    for ra in a:
        s = seed_of(ra)
        rb = by_seed_b.pop(s, None)
        if s is None or rb is None:
            continue
        sa, sb = stop_step(ra), stop_step(rb)
        if sa is None or sb is None:
            out.dropped += 1
            continue
        common = min(sa, sb)
        pa, pb = log_lambda_at(ra, common), log_lambda_at(rb, common)
        if pa is None or pb is None:
            out.dropped += 1
            continue
        out.x.append(pa[0])
        out.y.append(pb[0])
        out.steps.append(common)
        if pa[1] and pb[1]:
            out.exact += 1
        else:
            out.interpolated += 1
    return out


def common_step(runs: list[Run]) -> float | None:
    """The largest step every run reached (the earliest stop): for unpaired comparisons."""
    steps = [s for s in (stop_step(r) for r in runs) if s is not None]
    return min(steps) if steps else None


def unpaired_log_lambda(runs: list[Run], step: float) -> list[float]:
    return [p[0] for p in (log_lambda_at(r, step) for r in runs) if p is not None]
