"""The study's claims, tested on run records: which *arm* a run belongs to, which runs collapsed, and one
`Claim` row (claim, task, statistic, p, n, verdict) per claim of the reference paper that the runs can test.

Arms. A run's arm is its rule plus what changes its training beyond the rule (arm_of): bptt_scaled's ρ
mode ("ρ history": the measured ρ(t) of a run, "mean ρ": one constant), tbptt's window, an early stop on
test accuracy ("early-stopped", the reference's App. Table 1), a learning-rate scheduler ("+ lr decay").

Claims (α = ALPHA), for each bio-plausible rule present (eprop, rflo, mdgl) against the bptt arm:
  larger gap            Welch t and Mann-Whitney U, one-sided (bio > bptt); also against the arm
                        "bptt early-stopped" when present (with higher final λ1; the reference's App. Table 1)
  more variable gap     Brown-Forsythe (scipy.stats.levene, center="median"); held when the bio variance
                        is the larger one and p < α
  higher final λ1       Mann-Whitney U, one-sided (a rank test: the same on λ1 and on log λ1)
  faster rise of λ1     Mann-Whitney U, one-sided, on the rise rate: Δ log λ1 / Δ step between a run's
                        first two curvature measurements
  gap-λ1 correlation    Spearman r (gap, λ1) and Pearson r (gap, log λ1), pooled over the main rules'
                        runs and within each rule; held when r > 0 and p (two-sided) < α
  step-matched BPTT     each bptt_scaled arm's final λ1: not different from eprop's (two-sided
                        Mann-Whitney p >= α) and above bptt's (one-sided p < α)
  Theorem 1             per arm: final |ρ|ηλ1 < 2 (plain GD's classical bound) for every run with a value
                        (at least MIN_N of them); the statistic also gives how many runs end below 1 and the
                        fraction of curvature steps below 1 and below 2
A claim with fewer than MIN_N runs in a group is "not tested" with the reason.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from analysis.load import Run, finite

ALPHA = 0.05
MIN_N = 3
BIO_RULES = ("eprop", "rflo", "mdgl")
MAIN_RULES = ("bptt",) + BIO_RULES
EARLY_STOPPED = "bptt early-stopped"
COLLAPSE_ACC_DROP = 0.2  # classification: final train acc more than this below its best along the run
COLLAPSE_LOSS_RATIO = 2.0  # regression: final train loss above this multiple of its best along the run


def number(x) -> float | None:
    """x as a finite float, None for anything else (null, strings, bools, NaN, lists)."""
    return finite(x)


# ----------------------------------------------------------------------------------------------- arms
def arm_of(run: Run) -> str:
    """The arm label: "bptt", "eprop", "bptt_scaled (ρ history)", "bptt_scaled (mean ρ)", "tbptt w=10",
    "bptt early-stopped", "eprop + lr decay", ..."""
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
        if r.ok:
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
@dataclass
class Claim:
    claim: str
    task: str
    statistic: str  # what was computed, with its value
    p: float | None
    n: str  # "12 vs 12", or "24" for one sample
    verdict: str  # "held", "not held", "not tested (<reason>)"
    test: str = ""  # the test's short name: claims are keyed by (claim, test)

    def row(self) -> list[str]:
        return [self.claim, self.task, self.statistic, fmt(self.p), self.n, self.verdict]


def fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def values(runs: list[Run], get) -> list[float]:
    out = []
    for r in runs:
        v = get(r)
        if v is not None and math.isfinite(v):
            out.append(float(v))
    return out


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def too_few(x, y, names=("", "")) -> str | None:
    short = [f"{name} n={len(v)}" for name, v in zip(names, (x, y)) if len(v) < MIN_N]
    return f"not tested (fewer than {MIN_N} runs: {', '.join(short)})" if short else None


def two_sample(claim: str, task: str, x: list[float], y: list[float], test: str, names: tuple[str, str],
               alternative: str = "greater") -> Claim:
    """One two-sample test of x against y: test in {"welch", "mwu", "levene"}."""
    n = f"{len(x)} vs {len(y)}"
    name = test_name(test, alternative)
    skip = too_few(x, y, names)
    if skip:
        return Claim(claim, task, name, None, n, skip, name)
    if test == "welch":
        res = _quiet(sps.ttest_ind, x, y, equal_var=False, alternative=alternative)
        stat = f"Welch t = {fmt(float(res.statistic))}"
    elif test == "mwu":
        res = _quiet(sps.mannwhitneyu, x, y, alternative=alternative)
        stat = f"Mann–Whitney U = {fmt(float(res.statistic))}" + (" (two-sided)" if alternative == "two-sided"
                                                                   else "")
    else:
        res = _quiet(sps.levene, x, y, center="median")
        stat = (f"Brown–Forsythe W = {fmt(float(res.statistic))}; var {fmt(float(np.var(x, ddof=1)))} vs "
                f"{fmt(float(np.var(y, ddof=1)))}")
    p = float(res.pvalue)
    if math.isnan(p):
        return Claim(claim, task, stat, None, n, "not tested (statistic undefined: constant values)", name)
    if test == "levene":
        held = p < ALPHA and np.var(x, ddof=1) > np.var(y, ddof=1)
    elif alternative == "two-sided":  # the claim is "no difference"
        held = p >= ALPHA
    else:
        held = p < ALPHA
    return Claim(claim, task, stat, p, n, "held" if held else "not held", name)


def test_name(test: str, alternative: str) -> str:
    return {"welch": "Welch t", "mwu": "Mann–Whitney U", "levene": "Brown–Forsythe W"}[test] + (
        " (two-sided)" if alternative == "two-sided" and test == "mwu" else "")


def correlation_claim(claim: str, task: str, runs: list[Run], gap: str, kind: str) -> Claim:
    """Spearman r (gap, λ1) or Pearson r (gap, log λ1) over the runs with both values (λ1 > 0 for log)."""
    pairs = [(r.value("lambda_max"), gap_of(r, gap)) for r in runs]
    pairs = [(lam, g) for lam, g in pairs if lam is not None and g is not None and (kind == "spearman" or lam > 0)]
    name = "Spearman r" if kind == "spearman" else "Pearson r (log λ1)"
    if len(pairs) < MIN_N:
        return Claim(claim, task, name, None, str(len(pairs)),
                     f"not tested (fewer than {MIN_N} runs: n={len(pairs)})", name)
    lam, g = (np.array(v, dtype=float) for v in zip(*pairs))
    if np.ptp(lam) == 0 or np.ptp(g) == 0:
        return Claim(claim, task, name, None, str(len(pairs)), "not tested (a constant variable)", name)
    res = _quiet(sps.spearmanr, lam, g) if kind == "spearman" else _quiet(sps.pearsonr, np.log(lam), g)
    r, p = float(res.statistic), float(res.pvalue)
    return Claim(claim, task, f"{name} = {fmt(r)}", p, str(len(pairs)),
                 "held" if r > 0 and p < ALPHA else "not held", name)


def task_claims(task: str, groups: dict[str, list[Run]], gap: str) -> list[Claim]:
    """Every claim this task's ok runs (grouped by arm) can test, in a fixed order."""
    out: list[Claim] = []
    bptt = groups.get("bptt", [])
    lam = lambda r: r.value("lambda_max")  # noqa: E731
    gapv = lambda r: gap_of(r, gap)  # noqa: E731
    for bio in BIO_RULES:
        if bio not in groups:
            continue
        b = groups[bio]
        names = (bio, "bptt")
        out.append(two_sample(f"{bio}: larger gap than bptt", task, values(b, gapv), values(bptt, gapv),
                              "welch", names))
        out.append(two_sample(f"{bio}: larger gap than bptt", task, values(b, gapv), values(bptt, gapv),
                              "mwu", names))
        out.append(two_sample(f"{bio}: more variable gap than bptt", task, values(b, gapv), values(bptt, gapv),
                              "levene", names))
        out.append(two_sample(f"{bio}: higher final λ1 than bptt", task, values(b, lam), values(bptt, lam),
                              "mwu", names))
        out.append(two_sample(f"{bio}: faster rise of λ1 than bptt (Δlog λ1/Δstep, first two curvature steps)",
                              task, values(b, rise_rate), values(bptt, rise_rate), "mwu", names))
    early = groups.get(EARLY_STOPPED, [])
    for bio in BIO_RULES:  # the reference's App. Table 1: BPTT stopped early at the bio rule's test accuracy
        if bio not in groups or EARLY_STOPPED not in groups:
            continue
        b, names = groups[bio], (bio, EARLY_STOPPED)
        out.append(two_sample(f"{bio}: larger gap than {EARLY_STOPPED}", task, values(b, gapv),
                              values(early, gapv), "welch", names))
        out.append(two_sample(f"{bio}: larger gap than {EARLY_STOPPED}", task, values(b, gapv),
                              values(early, gapv), "mwu", names))
        out.append(two_sample(f"{bio}: higher final λ1 than {EARLY_STOPPED}", task, values(b, lam),
                              values(early, lam), "mwu", names))
    main = [g for g in groups if g in MAIN_RULES]
    if main:
        pooled = [r for g in main for r in groups[g]]
        label = "pooled " + "+".join(main)
        for kind in ("spearman", "pearson"):
            out.append(correlation_claim(f"gap–λ1 correlation ({label})", task, pooled, gap, kind))
        for g in main:
            for kind in ("spearman", "pearson"):
                out.append(correlation_claim(f"gap–λ1 correlation ({g})", task, groups[g], gap, kind))
    eprop = groups.get("eprop", [])
    for g in groups:
        if not g.startswith("bptt_scaled"):
            continue
        s = groups[g]
        vs_eprop = two_sample(f"{g}: final λ1 not different from eprop", task, values(s, lam),
                              values(eprop, lam), "mwu", (g, "eprop"), alternative="two-sided")
        vs_bptt = two_sample(f"{g}: final λ1 above bptt", task, values(s, lam), values(bptt, lam), "mwu",
                             (g, "bptt"))
        both = ("held" if vs_eprop.verdict == vs_bptt.verdict == "held" else
                "not tested" + next(v.verdict[len("not tested"):] for v in (vs_eprop, vs_bptt)
                                    if v.verdict.startswith("not tested"))
                if any(v.verdict.startswith("not tested") for v in (vs_eprop, vs_bptt)) else "not held")
        out += [vs_eprop, vs_bptt,
                Claim(f"{g}: reproduces eprop's final λ1 (both rows above)", task, "—", None,
                      f"{len(values(s, lam))} vs {len(values(eprop, lam))} vs {len(values(bptt, lam))}", both)]
    for g, runs in groups.items():
        finals = values(runs, final_stability)
        points = [v for r in runs for _, v in stability_points(r)]
        claim = f"Theorem 1: final |ρ|ηλ1 < 2 ({g})"
        if not finals:
            out.append(Claim(claim, task, "no theory_stability at a curvature step", None, "0",
                             "not tested (no run has a value)"))
            continue
        below2 = sum(v < 2 for v in finals)
        stat = (f"{below2}/{len(finals)} runs' final value < 2, {sum(v < 1 for v in finals)}/{len(finals)} < 1; "
                f"curvature steps < 1: {np.mean([v < 1 for v in points]):.0%}, < 2: "
                f"{np.mean([v < 2 for v in points]):.0%}")
        verdict = ("held" if below2 == len(finals) else "not held") if len(finals) >= MIN_N else (
            f"not tested (fewer than {MIN_N} runs with a value: n={len(finals)})")
        out.append(Claim(claim, task, stat, None, str(len(finals)), verdict))
    return out


CRITERIA = [
    f"α = {ALPHA}; a group with fewer than {MIN_N} runs with the value: not tested. p from scipy.stats.",
    "Larger gap: Welch t (ttest_ind, equal_var=False) and Mann–Whitney U, one-sided bio > bptt (and > bptt "
    "early-stopped when that arm is present); held when p < α.",
    "More variable gap: Brown–Forsythe test (levene, center='median'); held when the bio rule's variance is the "
    "larger one and p < α.",
    "Higher final λ1 and faster rise of λ1: Mann–Whitney U one-sided (rank test: the same on λ1 and log λ1); "
    "rise = "
    "Δ log λ1 / Δ step between a run's first two curvature measurements; held when p < α.",
    "gap–λ1 correlation: Spearman r on (λ1, gap) and Pearson r on (log λ1, gap), p two-sided; held when r > 0 "
    "and p < α.",
    "Step-matched BPTT: final λ1 vs eprop two-sided Mann–Whitney (held = not significantly different, p ≥ α: "
    "absence of evidence, not equivalence) and vs bptt one-sided (held when p < α); reproduces eprop's λ1 "
    "when both hold.",
    "Theorem 1: the run's last recorded theory_stability |ρ|ηλ1 at a curvature step (λ1 of that step, mean ρ "
    "since the previous one); held when every run with a value (at least 3) ends below 2 (GD's classical ηλ1 < 2 "
    "bound); "
    "Theorem 1's own bound is 1, reported beside it.",
]


def label(c: Claim) -> str:
    """The claim with its test, e.g. "eprop: larger gap than bptt [Welch t]"."""
    return c.claim + (f" [{c.test}]" if c.test else "")


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
        keys.setdefault(label(c), {})[c.task] = c.verdict.split(" (")[0]
    rows = [[k] + [v.get(t, "—") for t in tasks] for k, v in keys.items()]
    return ["claim"] + tasks, rows
