"""Holm's step-down correction within each family of claims (statsmodels.stats.multitest.multipletests)."""
from __future__ import annotations

from statsmodels.stats.multitest import multipletests


def holm(pvalues: list[float], alpha: float = 0.05) -> list[float]:
    """Holm-adjusted p-values, in the order given."""
    if not pvalues:
        return []
    return [float(p) for p in multipletests(pvalues, alpha=alpha, method="holm")[1]]


def adjust_by_family(items: list, family, pvalue, alpha: float = 0.05) -> dict[int, float]:
    """{index in items: Holm-adjusted p} within each family(item), over the items whose pvalue(item) is
    not None."""
    groups: dict = {}
    for i, it in enumerate(items):
        if pvalue(it) is not None:
            groups.setdefault(family(it), []).append(i)
    out = {}
    for idx in groups.values():
        for i, p in zip(idx, holm([pvalue(items[i]) for i in idx], alpha)):
            out[i] = p
    return out
