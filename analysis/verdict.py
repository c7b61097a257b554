"""One claim row of report.md and how its verdict is decided, after Holm's correction within its family.

Verdicts (α the claim's, p the Holm-adjusted p):
  held                      p < α in the claimed direction (equivalence: TOST p < α)
  not interpretable (...)   a gap claim where an arm did not learn the task (analysis.learning), any p
  against the claim (...)   a correlation significant with the opposite sign
  not held: reversed        the opposite one-sided test (Bonferroni over the family) is significant
  not held: absent (...)    a difference claim not held whose TOST shows equivalence within the margin
  not held: undetectable    not held, equivalence not shown: the smallest effect detectable at this n
                            (power 0.8, α / family size) is given
  not held: not shown       an equivalence claim whose TOST p ≥ α
  not tested (...)          too few runs, no such arm, no value
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

ALPHA = 0.05


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


@dataclass
class Claim:
    claim: str
    task: str
    statistic: str  # what was computed, with its value
    p: float | None
    n: str  # "10 pairs", "10 vs 9 (unpaired: ...)", "24"
    verdict: str = ""
    test: str = ""  # the test's short name: claims are keyed by (claim, test)
    primary: bool = False
    family: str = ""
    alpha: float = ALPHA
    p_holm: float | None = None
    effect: str = "—"  # effect size with its 95% CI
    score: str = "—"  # test scores and learned counts of the arms (gap claims)
    mde: str = "—"  # smallest detectable effect at n
    decision: str = "count"  # "directional" | "equivalence" | "correlation" | "count"
    sign: float = 0.0  # the observed effect's direction relative to the claim (+ for the claim)
    not_tested: str | None = None
    gate: str | None = None  # "not interpretable (...)" for a gap claim on an arm that did not learn
    absent: str | None = None  # "absent (...)" when an equivalence test shows no effect
    smallest: object = None  # callable(alpha) -> smallest detectable effect text, for "undetectable"
    key: str = ""  # a stable id: "<kind> <arm> <against>"
    extra: dict = field(default_factory=dict)

    def row(self) -> list[str]:
        return [self.claim, "primary" if self.primary else "exploratory", self.family, self.test, self.n,
                self.statistic, self.effect, self.score, fmt(self.p), fmt(self.p_holm), self.mde, self.verdict]


HEADER = ["claim", "kind", "family", "test", "n", "statistic", "effect [95% CI]", "test score (learned)", "p",
          "p Holm", "smallest detectable (power 0.8)", "verdict"]


def reverse_significant(c: Claim, family_size: int) -> bool:
    """The one-sided test in the other direction, Bonferroni over the family (Holm's strictest step), < α."""
    p = c.extra.get("p_reverse")
    return p is not None and min(1.0, p * max(family_size, 1)) < c.alpha


def decide(c: Claim, family_size: int) -> None:
    """Set c.mde and c.verdict from its Holm-adjusted p (c.p_holm) and its decision data."""
    if c.not_tested:
        c.verdict = f"not tested ({c.not_tested})"
        return
    if c.decision == "count":
        return  # a descriptive row (Theorem 1): the verdict was set when it was counted
    if c.smallest is not None:
        c.mde = c.smallest(c.alpha / max(family_size, 1))
    p = c.p_holm
    if p is None:
        c.verdict = "not tested (statistic undefined: constant values)"
        return
    significant = p < c.alpha
    if c.decision == "correlation":
        if significant:
            c.verdict = "held" if c.sign > 0 else "against the claim (significant negative correlation)"
        else:
            c.verdict = "not held: undetectable at this n"
        return
    if c.gate:
        c.verdict = c.gate
    elif c.decision == "equivalence":
        c.verdict = "held" if significant else "not held: not shown (equivalence within the margin)"
    elif significant and c.sign > 0:
        c.verdict = "held"
    elif significant or reverse_significant(c, family_size):
        c.verdict = "not held: reversed (significant in the other direction)"
    elif c.absent:
        c.verdict = f"not held: {c.absent}"
    else:
        c.verdict = "not held: undetectable at this n"
