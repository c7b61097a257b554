"""The study's claims on run records: which *arm* a run belongs to, which runs collapsed, and the claim rows
the analysis plan (docs/study/plan.yaml, analysis.plan) asks for, Holm-corrected within each family.

Arms. A run's arm is the study's arm name when the record has one (config `study_arm`, e.g. bptt_matched),
else its rule plus what changes its training beyond the rule (arm_of): bptt_scaled's ρ mode ("ρ history":
the measured ρ(t) of a run, "mean ρ": one constant), tbptt's window, an early stop on test accuracy
("early-stopped", the reference's App. Table 1), a learning-rate scheduler ("+ lr decay").

Claims. The plan's primary claims for the task, its "any rule" template for every arm in the records that
is neither the reference (bptt) nor a control — whatever the rule's name — and the controls' exploratory
claims (analysis.claim_kinds evaluates each); Holm within each (task, family); the verdict words are
analysis.verdict's. Theorem 1 rows (exploratory, descriptive): per arm, final |ρ|ηλ1 < 2 for every run
with a value (at least MIN_N of them).
"""
from __future__ import annotations

import math

import numpy as np

from analysis.claim_kinds import MIN_N, evaluate
from analysis.holm import adjust_by_family
from analysis.load import Run, finite
from analysis.plan import Plan, load_plan
from analysis.verdict import Claim, decide, fmt  # noqa: F401  (fmt: used by report.py)

COLLAPSE_ACC_DROP = 0.2  # classification: final train acc more than this below its best along the run
COLLAPSE_LOSS_RATIO = 2.0  # regression: final train loss above this multiple of its best along the run


def number(x) -> float | None:
    """x as a finite float, None for anything else (null, strings, bools, NaN, lists)."""
    return finite(x)


# ----------------------------------------------------------------------------------------------- arms
def arm_of(run: Run) -> str:
    """The arm label: the record's study arm (config study_arm) when it has one, else "bptt", "eprop",
    "bptt_scaled (ρ history)", "bptt_scaled (mean ρ)", "tbptt w=10", "bptt early-stopped",
    "eprop + lr decay", ..."""
    study_arm = run.config("study_arm")
    if isinstance(study_arm, str) and study_arm:
        return study_arm
    rule = run.rule
    label = rule
    if rule == "bptt_scaled":
        label += " (ρ history)" if run.config("rule.rho_mode") == "history" else " (mean ρ)"
    elif rule == "tbptt":
        window = run.config("rule.window")
        label += f" w={window}" if isinstance(window, (int, float, str)) and not isinstance(window, bool) else ""
    early = [f"stop_at_test_{m}{suffix}" for m in ("acc", "loss") for suffix in ("", "_from")]
    if any(run.config(key) not in (None, "") for key in early):  # stopped at a test score (App. Table 1)
        label += " early-stopped"
    scheduler = run.config("scheduler")
    if isinstance(scheduler, dict) and scheduler.get("_target_"):
        label += " + lr decay"
    return label


def assign_arms(runs: list[Run]) -> None:
    """Set run.group to its arm, plus ", lr=…" when the ok runs of one arm and task used several learning
    rates (runs at different lr are not pooled)."""
    lrs: dict[tuple[str, str], set] = {}
    for r in runs:
        if r.ok and not isinstance(r.config("study_arm"), str):  # a study arm is one arm whatever its lr
            lrs.setdefault((r.task, arm_of(r)), set()).add(r.lr)
    for r in runs:
        arm = arm_of(r)
        split = len(lrs.get((r.task, arm), ())) > 1
        r.params = {"lr": r.lr} if split else {}
        r.group = arm + (f" (lr={r.lr:.3g})" if split and r.lr is not None else " (lr=n/a)" if split else "")


# ------------------------------------------------------------------------------------------ collapse
def collapse(run: Run) -> str | None:
    """Why an ok run counts as collapsed, or None. Classification: final train accuracy more than
    COLLAPSE_ACC_DROP below the best train accuracy along the run. Regression (no accuracy): final train
    loss above COLLAPSE_LOSS_RATIO × the best (lowest) train loss along the run."""
    acc = [v for _, v in run.history("train_acc")]
    final = run.value("train_acc")  # null for a task without accuracy: then the loss decides
    if final is not None:
        best = max(acc + [final])
        return (f"train acc {final:.3g} < best {best:.3g} − {COLLAPSE_ACC_DROP:g}"
                if best - final > COLLAPSE_ACC_DROP else None)
    loss = [v for _, v in run.history("train_loss")]
    final = run.value("train_loss")
    if final is None:
        return None
    best = min(loss + [final])
    return (f"train loss {final:.3g} > {COLLAPSE_LOSS_RATIO:g} × best {best:.3g}"
            if final > COLLAPSE_LOSS_RATIO * best else None)


# -------------------------------------------------------------------------------------- measurements
def gap_of(run: Run, gap: str) -> float | None:
    return run.value(gap)


def rise_rate(run: Run) -> float | None:
    """Δ log λ1 / Δ step between the run's first two curvature measurements (None without two positive ones)."""
    pts = [(s, v) for s, v in run.history("lambda_max") if v > 0]
    if len(pts) < 2 or pts[1][0] == pts[0][0]:
        return None
    (s0, v0), (s1, v1) = pts[:2]
    return (math.log(v1) - math.log(v0)) / (s1 - s0)


def stability_points(run: Run) -> list[tuple[float, float]]:
    """Theorem 1's |ρ|ηλ1 as the run recorded it (history theory_stability), only at steps where λ1 was
    measured (the same step's λ1; a record without a lambda_max history keeps all its points, as new records
    write theory_stability only at curvature steps). Never recombined here from values of other steps."""
    pts = run.history("theory_stability")
    lam_steps = {s for s, _ in run.history("lambda_max")}
    return [(s, v) for s, v in pts if s in lam_steps] if lam_steps else pts


def final_stability(run: Run) -> float | None:
    """The run's last Theorem 1 value at a curvature step, or None (n/a)."""
    pts = stability_points(run)
    return pts[-1][1] if pts else None


def history_mean(run: Run, key: str) -> float | None:
    v = [x for _, x in run.history(key)]
    return float(np.mean(v)) if v else None


# ------------------------------------------------------------------------------------------- claims
def theorem1_claims(task: str, groups: dict[str, list[Run]]) -> list[Claim]:
    """Per arm: final |ρ|ηλ1 < 2 (GD's classical bound) for every run with a value (descriptive, no p)."""
    out = []
    for g, runs in groups.items():
        finals = [v for v in (final_stability(r) for r in runs) if v is not None]
        points = [v for r in runs for _, v in stability_points(r)]
        claim = f"Theorem 1: final |ρ|ηλ1 < 2 ({g})"
        c = Claim(claim, task, "no theory_stability at a curvature step", None, str(len(finals)),
                  family=f"{task}: theorem 1", test="count", key=f"theorem1 {g}")
        if not finals:
            c.not_tested = "no run has a value"
        else:
            below2 = sum(v < 2 for v in finals)
            c.statistic = (f"{below2}/{len(finals)} runs' final value < 2, {sum(v < 1 for v in finals)}/"
                           f"{len(finals)} < 1; curvature steps < 1: {np.mean([v < 1 for v in points]):.0%}, "
                           f"< 2: {np.mean([v < 2 for v in points]):.0%}")
            if len(finals) >= MIN_N:
                c.verdict = "held" if below2 == len(finals) else "not held"
            else:
                c.not_tested = f"fewer than {MIN_N} runs with a value: n={len(finals)}"
        out.append(c)
    return out


def task_claims(task: str, groups: dict[str, list[Run]], gap: str, plan: Plan | None = None,
                everyone: dict[str, list[Run]] | None = None) -> list[Claim]:
    """Every claim of the plan this task's ok runs (grouped by arm) can state, Holm-corrected within each
    family, verdicts decided; then the Theorem 1 rows. `everyone`: every run of each arm (any status), for
    the learned counts."""
    plan = plan or load_plan()
    out = [evaluate(spec, task, groups, gap, plan, everyone) for spec in plan.claims_for(task, list(groups))]
    adjusted = adjust_by_family(out, lambda c: c.family, lambda c: None if c.not_tested else c.p)
    sizes: dict[str, int] = {}
    for i in adjusted:
        sizes[out[i].family] = sizes.get(out[i].family, 0) + 1
    for i, c in enumerate(out):
        c.p_holm = adjusted.get(i)
        decide(c, sizes.get(c.family, 1))
    for c in theorem1_claims(task, groups):
        decide(c, 1)
        out.append(c)
    return out


def criteria(plan: Plan) -> list[str]:
    """The rules behind the claims table, in words, for report.md."""
    return [
        "Primary: the plan's claims for this task; every other row is exploratory. α per claim (plan; default "
        f"{plan.alpha:g}); fewer than {MIN_N} runs with the value: not tested.",
        "Pairing: arms share seeds (initialisation, task data, RFLO's B), so a claim with pairing: seed compares "
        "the runs of equal seed (Wilcoxon signed-rank on the gap, paired t on log λ1, TOST paired); when fewer "
        "than 3 seeds pair it falls back to Mann–Whitney U / Welch t / TOST unpaired and the n column says so.",
        "p Holm: Holm's step-down adjustment (statsmodels multipletests) within each family (task: family; the "
        "exploratory claims in families of their own, apart from the primary ones); verdicts use the adjusted p. "
        "“Reversed”: the one-sided test in the other direction is below α / family size.",
        f"Equivalence (“reproduces”, “equivalent”): TOST (statsmodels ttost_paired / ttost_ind) on log λ1 "
        f"with margin ×/÷ {plan.lambda_ratio:g}, on the gap with the task's gap_margin; held when the TOST p < α.",
        "Effect [95% CI]: mean paired gap difference (Δgap), ratio of geometric-mean λ1, variance ratio, with "
        "BCa bootstrap intervals (scipy.stats.bootstrap, 9,999 resamples, fixed generator).",
        "Not held: “absent” when a TOST at the margin above (at α, uncorrected) shows equivalence; otherwise "
        "“undetectable at this n”, with the smallest effect detectable with power 0.8 at α / family size "
        "(statsmodels t power from the observed SD; rank tests through the t approximation; variance by the F "
        "test; correlation by Fisher z).",
        f"Learned: a run learned when it ended ok, reached its stop target (when it had one) and its test score "
        f"(accuracy; 1 − test_nmse for regression) > chance + {plan.learned_margin:g}; counted over every run of "
        "the arm (diverged, failed and capped runs did not learn); a gap claim on an arm where fewer than half "
        "the runs learned is “not interpretable” whatever its p.",
        "Matched point: every claim on final values (all but λ1 at equal steps and the correlation) uses only "
        "the runs that reached their stop target; its n says how many did not; with fewer than "
        f"{plan.min_n} such runs on a side the claim is “not interpretable”.",
        "gap–λ1 correlation within an arm: Spearman r on (λ1, gap), two-sided permutation p (scipy "
        "permutation_test); held when r > 0 and p Holm < α, "
        "“against the claim” when r < 0 and p Holm < α.",
        "λ1 at equal steps: each seed pair at the earlier of its two runs' stop steps; λ1 measured at exactly that "
        "step in both runs where the records hold it (curvature.at_steps_from), else interpolated linearly in "
        "log λ1 between the measurements around it (counted in n); pairs with neither are left out and counted.",
        "Theorem 1's prediction (λ1 ratio equals the inverse ρ̄ ratio): paired TOST on log(λ1·|ρ̄|) within ×/÷ "
        f"{plan.lambda_ratio:g}, ρ̄ the run's rho_mean (mean ρ over the whole run; 1 for BPTT); the statistic "
        "gives the observed λ1 ratio and the ratio 1/ρ̄ predicts.",
        "Theorem 1: the run's last recorded theory_stability |ρ|ηλ1 at a curvature step; held when every run with "
        "a value (at least 3) ends below 2 (GD's classical ηλ1 < 2 bound); Theorem 1's own bound 1 beside it.",
    ]


def label(c: Claim) -> str:
    """The claim as the cross-task table names it (one test per claim now: the plan's)."""
    return c.claim + ("" if c.primary or c.key.startswith("theorem1") else " (exploratory)")


def verdict_changes(with_all: list[Claim], without: list[Claim]) -> list[str]:
    """Claims whose verdict differs between two computations (e.g. with and without collapsed runs); a claim
    only one of them could state counts as a change too."""
    other = {(c.task, label(c)): c.verdict for c in without}
    return [f"{label(c)} ({c.task}): {c.verdict} → {other.get((c.task, label(c)), 'absent')}"
            for c in with_all if other.get((c.task, label(c))) != c.verdict]


def claims_matrix(claims: list[Claim]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a claim × task table of verdicts (one column per task), for a multi-task summary.
    A claim tested by two statistics gets one row per statistic."""
    tasks = sorted({c.task for c in claims})
    keys: dict[str, dict[str, str]] = {}
    for c in claims:
        keys.setdefault(label(c), {})[c.task] = c.verdict.split(" (")[0]  # the verdict's words, no details
    rows = [[k] + [v.get(t, "—") for t in tasks] for k, v in keys.items()]
    return ["claim"] + tasks, rows
