"""Did a run learn the task? A gap between a rule that learned and one that did not measures failure to
learn, not generalization (SPEC section 5), so gap claims are gated on it.

A run's test score: test accuracy (classification), 1 − test_nmse for regression (nmse = MSE / mean target²:
predicting zero scores 0). It learned when its score > chance + margin (the plan's learned_margin, 0.15).
An arm learned when at least half of its runs did; otherwise its gap claims are "not interpretable".
"""
from __future__ import annotations

from analysis.load import Run


def test_score(run: Run) -> float | None:
    acc = run.value("test_acc")
    if acc is not None:
        return acc
    nmse = run.value("test_nmse")
    return None if nmse is None else 1.0 - nmse


def learned(run: Run, chance: float | None, margin: float) -> bool | None:
    """True / False, or None when the chance level or the score is unknown."""
    score = test_score(run)
    if chance is None or score is None:
        return None
    return score > chance + margin


def learned_count(runs: list[Run], chance: float | None, margin: float) -> tuple[int, int]:
    """(runs that learned, runs with a known answer)."""
    flags = [learned(r, chance, margin) for r in runs]
    known = [f for f in flags if f is not None]
    return sum(known), len(known)


def arm_learned(runs: list[Run], chance: float | None, margin: float) -> bool | None:
    """At least half of the arm's runs learned (None when unknown for every run)."""
    n_learned, n_known = learned_count(runs, chance, margin)
    return None if n_known == 0 else 2 * n_learned >= n_known
