"""The report's numbers, apart from drawing and the claims (analysis.claim_table): which gap a task uses, mean +/- std
over seeds, gap-vs-lambda_max correlations, and mean trajectories over seeds."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from analysis.load import Run

MIN_CORR_N = 3  # with 2 points r is +/-1 and p is 1: not a correlation worth reporting


def gap_key(runs: list[Run]) -> str:
    """"gap_acc" when any run of the task has an accuracy gap (classification), else "gap_loss" (regression)."""
    return "gap_acc" if any(r.value("gap_acc") is not None for r in runs) else "gap_loss"


@dataclass
class Stat:
    """n finite values, their mean and standard deviation (ddof=1; 0 for a single value; nan for none)."""
    n: int
    mean: float
    std: float


def describe(values) -> Stat:
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Stat(0, math.nan, math.nan)
    return Stat(len(x), float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0)


@dataclass
class Correlation:
    """Pearson and Spearman r and two-sided p of y against x over n pairs; nan where undefined
    (fewer than MIN_CORR_N pairs, or one variable constant)."""
    n: int
    pearson_r: float = math.nan
    pearson_p: float = math.nan
    spearman_r: float = math.nan
    spearman_p: float = math.nan


def correlation(x, y) -> Correlation:
    """Correlation of paired samples; pairs with a missing or non-finite member are left out."""
    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < MIN_CORR_N:
        return Correlation(n)
    a, b = np.array(pairs, dtype=float).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return Correlation(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr, pp = sps.pearsonr(a, b)
        sr, sp = sps.spearmanr(a, b)
    return Correlation(n, float(pr), float(pp), float(sr), float(sp))


def log_or_none(x: float | None) -> float | None:
    return math.log(x) if x is not None and x > 0 else None


def gap_lambda_correlations(groups: dict[str, list[Run]], gap: str,
                            pooled: list[str] | None = None) -> dict[str, Correlation]:
    """{"all": pooled over the arms `pooled` (every group when None; the plan's one definition of pooled,
    used by the figure and the table alike), group: within that group} of the final gap against log final
    lambda_max, one pair per ok run with lambda_max > 0: Pearson r is on log lambda_max; Spearman r, a rank
    correlation, is the same on lambda_max."""
    def corr(runs):
        return correlation([log_or_none(r.value("lambda_max")) for r in runs], [r.value(gap) for r in runs])
    arms = list(groups) if pooled is None else [g for g in pooled if g in groups]
    out = {"all": corr([r for g in arms for r in groups[g]])}
    out.update({g: corr(runs) for g, runs in groups.items()})
    return out


@dataclass
class Curve:
    """A trajectory over seeds: at each step, mean and std (ddof=1; 0 for one run) of the runs measured there."""
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray


def mean_curve(histories: list[list[tuple[float, float]]]) -> Curve | None:
    """Mean +/- std over runs at every step any run was measured at (runs need not share a step grid; the
    count n says how many runs a point averages). None when no run has a point."""
    by_step: dict[float, list[float]] = {}
    for points in histories:
        for step, v in points:
            by_step.setdefault(step, []).append(v)
    if not by_step:
        return None
    steps = sorted(by_step)
    stats = [describe(by_step[s]) for s in steps]
    return Curve(np.array(steps), np.array([s.mean for s in stats]), np.array([s.std for s in stats]),
                 np.array([s.n for s in stats]))


def carried_curve(histories: list[list[tuple[float, float]]]) -> tuple[Curve, np.ndarray] | None:
    """Mean +/- std over runs at every step any run was measured at, each run's last value carried forward
    after its last measurement (no survivor bias: a run that stopped early still counts), and, per step, how
    many runs were still measured there or later (the rest are carried). None when no run has a point."""
    histories = [h for h in histories if h]
    if not histories:
        return None
    histories = [sorted(h, key=lambda p: p[0]) for h in histories]
    steps = sorted({s for h in histories for s, _ in h})
    means, stds, ns, live = [], [], [], []
    at = [-1] * len(histories)  # per run, the index of its last point at or before `step`: one pass, linear
    for step in steps:
        for i, h in enumerate(histories):
            while at[i] + 1 < len(h) and h[at[i] + 1][0] <= step:
                at[i] += 1
        vals = [h[k][1] for h, k in zip(histories, at) if k >= 0]
        st = describe(vals)
        means.append(st.mean), stds.append(st.std), ns.append(st.n)
        live.append(sum(h[-1][0] >= step for h in histories))
    return Curve(np.array(steps), np.array(means), np.array(stds), np.array(ns)), np.array(live)
