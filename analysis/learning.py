"""Did a run learn the task, and did it reach the matched point? A gap between a rule that learned and one
that did not measures failure to learn, not generalization (SPEC section 5), so gap claims are gated on it.

A run's test score: test accuracy (classification), 1 − test_nmse for regression (nmse = MSE / mean target²:
predicting zero scores 0). It learned when it ended ok, reached its stop target (when it had one) and its
score > chance + margin (the plan's learned_margin, 0.15). Counts run over *every* run of an arm: a diverged
or failed run, and one capped at its step cap before the target, did not learn. An arm learned when at least
half of its runs did; otherwise its gap claims are "not interpretable".
"""
from __future__ import annotations

from analysis.load import Run


def test_score(run: Run) -> float | None:
    acc = run.value("test_acc")
    if acc is not None:
        return acc
    nmse = run.value("test_nmse")
    return None if nmse is None else 1.0 - nmse


def reached_target(run: Run) -> bool | None:
    """True when the run stopped at its stop target (the matched point), False when it had one and did not
    reach it (capped at its step cap, diverged, failed), None when it had none (e.g. a control trained for a
    set number of steps) or the record predates the field."""
    if not isinstance(run.summary.get("stop_target"), dict) or "stopped_at" not in run.summary:
        return None
    return run.summary.get("stopped_at") is not None and run.ok


def learned(run: Run, chance: float | None, margin: float) -> bool | None:
    """True / False, or None when the chance level or (for a run that ended ok) the score is unknown, or the
    run was interrupted (unfinished). Diverged, failed and capped runs did not learn."""
    if chance is None or run.status == "interrupted":
        return None
    if not run.ok or reached_target(run) is False:
        return False
    score = test_score(run)
    if score is None:
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
