"""Pairing two arms' runs by seed: arms that share a seed share the network's initialisation, the task's
data and RFLO's feedback matrix, so their runs are compared seed by seed (a paired test)."""
from __future__ import annotations

import math

from analysis.load import Run, finite


def seed_of(run: Run) -> float | None:
    return finite(run.seed)


def paired_values(a: list[Run], b: list[Run], get) -> tuple[list[float], list[float], list[float]]:
    """(x, y, seeds): get(run) of a's and b's runs that share a seed, aligned, for the seeds where both
    values are finite. A seed held by several runs of one arm pairs its first run only (runs are in seed
    order)."""
    def by_seed(runs):
        out = {}
        for r in runs:
            s, v = seed_of(r), get(r)
            if s is not None and v is not None and math.isfinite(v) and s not in out:
                out[s] = float(v)
        return out
    ya = by_seed(a)
    yb = by_seed(b)
    seeds = sorted(set(ya) & set(yb))
    return [ya[s] for s in seeds], [yb[s] for s in seeds], seeds


def unpaired_values(runs: list[Run], get) -> list[float]:
    """get(run) for every run with a finite value."""
    out = []
    for r in runs:
        v = get(r)
        if v is not None and math.isfinite(v):
            out.append(float(v))
    return out
