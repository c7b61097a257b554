"""The smallest effect a claim's test detects with power 0.8 at its n (a sensitivity analysis, from the
observed spread), so that a claim not held reads "undetectable at this n" rather than "absent".

  mean shifts (t, Wilcoxon, Mann–Whitney)  statsmodels TTestPower / TTestIndPower, one-sided; the rank
                                           tests through the t approximation (their efficiency against
                                           t is ≥ 0.86, ≈ 0.95 for normal data), in the measure's units
                                           (× the SD of the paired differences / the pooled SD)
  variance ratio                           the F test's: F_{1−α}(n1−1, n2−1) / F_{0.2}(n1−1, n2−1)
                                           (normal data)
  correlation                              Fisher z: tanh((z_{1−α} + z_{0.8}) / √(n − 3))
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower, TTestPower

POWER = 0.8


def _solve(fn) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            d = float(fn())
        except (ValueError, RuntimeError, ArithmeticError):
            return math.nan
    return d if math.isfinite(d) else math.nan


def mean_shift(x, y, paired: bool, alpha: float) -> float:
    """Smallest mean difference (units of x) detectable one-sided at alpha with power POWER."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if paired:
        n = len(x)
        if n < 3:
            return math.nan
        sd = float(np.std(x - y, ddof=1))
        d = _solve(lambda: TTestPower().solve_power(nobs=n, alpha=alpha, power=POWER, alternative="larger"))
        return d * sd
    n1, n2 = len(x), len(y)
    if min(n1, n2) < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * np.var(x, ddof=1) + (n2 - 1) * np.var(y, ddof=1)) / (n1 + n2 - 2))
    d = _solve(lambda: TTestIndPower().solve_power(nobs1=n1, ratio=n2 / n1, alpha=alpha, power=POWER,
                                                   alternative="larger"))
    return d * pooled


def variance_ratio(n1: int, n2: int, alpha: float) -> float:
    """Smallest var(x)/var(y) that a one-sided F test at alpha detects with power POWER."""
    if min(n1, n2) < 2:
        return math.nan
    return float(sps.f.ppf(1 - alpha, n1 - 1, n2 - 1) / sps.f.ppf(1 - POWER, n1 - 1, n2 - 1))


def correlation(n: int, alpha: float) -> float:
    """Smallest |r| detectable at alpha (two-sided) with power POWER (Fisher z approximation)."""
    if n < 4:
        return math.nan
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(POWER)
    return float(math.tanh(z / math.sqrt(n - 3)))
