"""The hypothesis tests the analysis plan names, run through scipy.stats / statsmodels (never by hand).

`run_test(test, x, y, alternative, margin)` tests x against y and returns a TestResult. Paired tests take
x and y aligned by seed (analysis.pairing); `unpaired_version` gives the test used when seeds do not pair.

  wilcoxon        scipy.stats.wilcoxon(x, y)              paired signed-rank on x − y
  ttest_rel       scipy.stats.ttest_rel(x, y)             paired t on x − y (the caller passes log λ1)
  mannwhitneyu    scipy.stats.mannwhitneyu(x, y)          unpaired rank test
  welch           scipy.stats.ttest_ind(equal_var=False)  unpaired t
  tost_paired     statsmodels ttost_paired(x, y, −m, m)   equivalence of paired means within ±margin
  tost_ind        statsmodels ttost_ind(usevar="unequal") equivalence of unpaired means within ±margin
  brown_forsythe  scipy.stats.levene(center="median")     equal variances (two-sided by construction)
  spearman        Spearman r (scipy.stats.spearmanr) with a permutation p (scipy.stats.permutation_test
                  over pairings: exact for n ≤ 8, else 9,999 resamples from a fixed generator): the
                  asymptotic p says 0 for r = 1 at n = 3
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

PAIRED = ("wilcoxon", "ttest_rel", "tost_paired")
UNPAIRED_VERSION = {"wilcoxon": "mannwhitneyu", "ttest_rel": "welch", "tost_paired": "tost_ind"}
NAMES = {"wilcoxon": "Wilcoxon signed-rank", "ttest_rel": "paired t", "mannwhitneyu": "Mann–Whitney U",
         "welch": "Welch t", "tost_paired": "TOST paired", "tost_ind": "TOST unpaired",
         "brown_forsythe": "Brown–Forsythe W", "spearman": "Spearman r"}
TESTS = tuple(NAMES)


@dataclass
class TestResult:
    test: str  # key of NAMES
    statistic: float
    p: float | None  # None when undefined (constant values)

    @property
    def name(self) -> str:
        return NAMES[self.test]


def unpaired_version(test: str) -> str:
    return UNPAIRED_VERSION.get(test, test)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _rank_correlation(y_ranks):
    """The Pearson correlation of permuted x ranks with y's ranks (Spearman r), vectorized over resamples."""
    yc = y_ranks - y_ranks.mean()

    def statistic(x_ranks, axis=-1):
        xc = x_ranks - x_ranks.mean(axis=axis, keepdims=True)
        return (xc * yc).sum(axis=axis) / np.sqrt((xc ** 2).sum(axis=axis) * (yc ** 2).sum())
    return statistic


def run_test(test: str, x, y, alternative: str = "greater", margin: float | None = None) -> TestResult:
    """One test of x against y. alternative: "greater" | "less" | "two-sided" (ignored by TOST, whose
    hypothesis is |mean difference| < margin, and by Brown–Forsythe, two-sided by construction)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if test == "wilcoxon":
        if np.all(x - y == 0):
            return TestResult(test, math.nan, None)
        res = _quiet(sps.wilcoxon, x, y, alternative=alternative)
    elif test == "ttest_rel":
        res = _quiet(sps.ttest_rel, x, y, alternative=alternative)
    elif test == "mannwhitneyu":
        res = _quiet(sps.mannwhitneyu, x, y, alternative=alternative)
    elif test == "welch":
        res = _quiet(sps.ttest_ind, x, y, equal_var=False, alternative=alternative)
    elif test in ("tost_paired", "tost_ind"):
        if margin is None or not margin > 0:
            raise ValueError(f"{test} needs a positive margin, got {margin!r}")
        if test == "tost_paired":
            p, lower, upper = _quiet(ttost_paired, x, y, -margin, margin)
        else:
            p, lower, upper = _quiet(ttost_ind, x, y, -margin, margin, usevar="unequal")
        # the reported statistic: the t of the one-sided test that decides (the larger p)
        t = lower[0] if lower[1] >= upper[1] else upper[0]
        return TestResult(test, float(t), None if math.isnan(p) else float(p))
    elif test == "brown_forsythe":
        res = _quiet(sps.levene, x, y, center="median")
    elif test == "spearman":
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return TestResult(test, math.nan, None)
        r = float(_quiet(sps.spearmanr, x, y).statistic)
        res = _quiet(sps.permutation_test, (sps.rankdata(x),), _rank_correlation(sps.rankdata(y)),
                     permutation_type="pairings", alternative=alternative, vectorized=True, n_resamples=9999,
                     rng=np.random.default_rng(0))
        return TestResult(test, r, float(res.pvalue))
    else:
        raise ValueError(f"unknown test {test!r}; known: {', '.join(TESTS)}")
    p = float(res.pvalue)
    return TestResult(test, float(res.statistic), None if math.isnan(p) else p)
