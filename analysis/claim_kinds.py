"""Each kind of claim the plan can name, evaluated on one task's ok runs grouped by arm: the measure, the
test (paired by seed where the plan says so and seeds pair), the effect size with its bootstrap CI, the
equivalence check behind "absent", the gates. Holm and the verdict come after (analysis.verdict.decide), over
every claim of a family.

Gates. Learned counts run over every run of an arm (diverged, failed and capped runs did not learn); a gap
claim on an arm where fewer than half learned is "not interpretable". A claim about the matched point (the
final gap or λ1: every kind but λ1 at equal steps and the correlation) uses only the runs that reached their
stop target, and its n says how many did not; when fewer than the plan's min_n runs (or pairs) are left, it
reads "not interpretable".

Theorem 1's prediction (lambda_follows_rho): λ1 ∝ 1/ρ̄ at the edge of stability, so the λ1 ratio of a rule
to BPTT should equal the inverse ratio of their mean ρ. Per seed pair: log(λ1_a ρ̄_a) − log(λ1_b ρ̄_b) ≈ 0, a
paired TOST within ×/÷ the plan's lambda_ratio; ρ̄ is the run's `rho_mean` (the mean ρ over the whole run,
the one definition every Theorem 1 quantity here uses; 1 for BPTT).
"""
from __future__ import annotations

import math

import numpy as np

from analysis import effects, equal_steps, learning, power
from analysis.claim_sentences import TEXT
from analysis.hypothesis import NAMES, PAIRED, run_test, unpaired_version
from analysis.load import Run
from analysis.pairing import paired_values, seed_of, unpaired_values
from analysis.plan import Plan, Spec
from analysis.verdict import Claim, fmt

MIN_N = 3

GAP_KINDS = ("gap_larger", "gap_more_variable", "gap_equivalent")
AT_ANY_STEP = ("lambda_higher_at_equal_steps", "gap_lambda_correlation")  # the others: at the matched point


def claim_text(spec: Spec) -> str:
    return TEXT[spec.claim].format(arm=spec.arm, against=spec.against)


def log_lambda(run: Run) -> float | None:
    lam = run.value("lambda_max")
    return math.log(lam) if lam is not None and lam > 0 else None


def log_lambda_rho(run: Run) -> float | None:
    """log(λ1 · |ρ̄|): equal across rules when λ1 ∝ 1/ρ̄ (Theorem 1); None without both values."""
    lam, rho = log_lambda(run), run.value("rho_mean")
    return lam + math.log(abs(rho)) if lam is not None and rho else None


def at_target(runs: list[Run]) -> tuple[list[Run], int]:
    """(the runs that reached their stop target or had none, how many did not reach theirs)."""
    kept = [r for r in runs if learning.reached_target(r) is not False]
    return kept, len(runs) - len(kept)


def score_cell(arms: list[tuple[str, list[Run]]], chance, margin) -> str:
    """"0.55 (3/10) vs 0.8 (10/10)": mean test score and runs that learned, per arm."""
    cells = []
    for _, runs in arms:
        scores = [s for s in (learning.test_score(r) for r in runs) if s is not None]
        n_learned, n_known = learning.learned_count(runs, chance, margin)
        mean = fmt(float(np.mean(scores))) if scores else "n/a"
        cells.append(mean + (f" ({n_learned}/{n_known})" if n_known else " (chance unknown)"))
    return " vs ".join(cells)


def gate(arms: list[tuple[str, list[Run]]], chance, margin) -> str | None:
    """"not interpretable (...)" when an arm did not learn (fewer than half of its runs above chance +
    margin), else None."""
    failed = []
    for name, runs in arms:
        if learning.arm_learned(runs, chance, margin) is False:
            n_learned, n_known = learning.learned_count(runs, chance, margin)
            failed.append(f"{name} learned in {n_learned}/{n_known} runs")
    return f"not interpretable ({'; '.join(failed)}: score ≤ chance {chance:g} + {margin:g})" if failed else None


def evaluate(spec: Spec, task: str, groups: dict[str, list[Run]], gap: str, plan: Plan,
             everyone: dict[str, list[Run]] | None = None) -> Claim:
    """The claim `spec` on this task's groups (ok runs by arm), before Holm (p_holm and verdict unset);
    `everyone`: every run of each arm, whatever its status, for the learned counts (default: groups)."""
    everyone = everyone if everyone is not None else groups
    c = Claim(claim=claim_text(spec), task=task, statistic="—", p=None, n="0", test=_test_label(spec.test, spec),
              primary=spec.primary, alpha=spec.alpha,
              family=f"{task}: {spec.family}" + ("" if spec.primary else " (exploratory)"),
              key=f"{spec.claim} {spec.arm} {spec.against or ''}".strip())
    chance, margin = plan.chance(task), plan.margin(task)
    a = groups.get(spec.arm)
    if not a:
        c.not_tested = f"no ok runs of arm {spec.arm}"
        return c
    if spec.claim == "gap_lambda_correlation":
        return _correlation(c, spec, a, gap, chance, margin)
    b = groups.get(spec.against)
    if not b:
        c.not_tested = f"no ok runs of arm {spec.against}"
        return c
    arms = [(spec.arm, everyone.get(spec.arm) or a), (spec.against, everyone.get(spec.against) or b)]
    is_gap = spec.claim in GAP_KINDS
    if is_gap:
        c.score = score_cell(arms, chance, margin)
        c.gate = gate(arms, chance, margin)
    # the measure, paired by seed where the plan says so and at least MIN_N seeds pair
    test, note, steps = spec.test, "", None
    if spec.claim not in AT_ANY_STEP:  # at the matched point: only runs that reached it
        (a, missed_a), (b, missed_b) = at_target(a), at_target(b)
        missed = [f"{m} {name}" for m, name in ((missed_a, spec.arm), (missed_b, spec.against)) if m]
        note = f"; {' and '.join(missed)} run(s) never reached the stop target, left out" if missed else ""
        if missed and min(len(a), len(b)) < plan.min_n:
            c.n = f"{len(a)} vs {len(b)} reached the target"
            c.gate = c.verdict = (f"not interpretable (only {len(a)} {spec.arm} and {len(b)} {spec.against} runs "
                                  f"reached the stop target; the plan's minimum is {plan.min_n})")
            c.decision = "count"
            return c
    if spec.claim == "lambda_higher_at_equal_steps":
        eq = equal_steps.paired_log_lambda(a, b)
        x, y, steps = eq.x, eq.y, eq.steps
        paired = spec.pairing == "seed" and len(x) >= MIN_N
        note = eq.note()
        if not paired:
            common = equal_steps.common_step(a + b)
            x = equal_steps.unpaired_log_lambda(a, common) if common else []
            y = equal_steps.unpaired_log_lambda(b, common) if common else []
            steps = [common] if common else []
    else:
        get = (lambda r: r.value(gap)) if is_gap else log_lambda_rho if spec.claim == "lambda_follows_rho" \
            else log_lambda
        x, y, _ = paired_values(a, b, get)
        paired = spec.pairing == "seed" and spec.test in PAIRED and len(x) >= MIN_N
        if not paired:
            x, y = unpaired_values(a, get), unpaired_values(b, get)
    if spec.test in PAIRED and not paired:
        test = unpaired_version(spec.test)
        note = (f" (unpaired: {'plan says pairing none' if spec.pairing != 'seed' else 'fewer than 3 seeds pair'})"
                + note)
    c.test = _test_label(test, spec)
    c.n = (f"{len(x)} pairs" if paired else f"{len(x)} vs {len(y)}") + note
    if steps:
        c.extra["steps"] = (min(steps), max(steps))
        c.n += f"; at step {fmt(min(steps))}" + (f"–{fmt(max(steps))}" if max(steps) != min(steps) else "")
    if len(x) < MIN_N or len(y) < MIN_N:
        c.not_tested = f"fewer than {MIN_N} runs with the value: {spec.arm} n={len(x)}, {spec.against} n={len(y)}"
        return c
    eq_margin = math.log(plan.lambda_ratio) if not is_gap else plan.gap_margin(task)
    if spec.claim in ("gap_equivalent", "lambda_equivalent"):
        return _equivalence(c, spec, test, x, y, paired, eq_margin, is_gap, plan)
    if spec.claim == "lambda_follows_rho":
        return _follows_rho(c, test, a, b, x, y, paired, eq_margin, plan)
    if spec.claim == "gap_more_variable":
        res = run_test(test, x, y)
        eff = effects.var_ratio(x, y, paired)
        c.statistic = f"W = {fmt(res.statistic)}"
        c.effect = _ci("var ratio", eff)
        c.p, c.decision, c.sign = res.p, "directional", 1.0 if eff.value > 1 else -1.0
        n1, n2 = len(x), len(y)
        c.smallest = lambda alpha: f"var ratio {fmt(power.variance_ratio(n1, n2, alpha))} (F approx.)"
        return c
    alternative = spec.alternative if spec.alternative in ("greater", "less", "two-sided") else "greater"
    res = run_test(test, x, y, alternative)
    if alternative in ("greater", "less"):  # the other direction, to tell "reversed" from "undetectable"
        c.extra["p_reverse"] = run_test(test, x, y, "less" if alternative == "greater" else "greater").p
    c.statistic = f"{'W' if test == 'wilcoxon' else 'U' if test == 'mannwhitneyu' else 't'} = {fmt(res.statistic)}"
    c.p, c.decision = res.p, "directional"
    if is_gap:
        eff = effects.difference(x, y, paired)
        c.effect = _ci("Δgap", eff)
        c.sign = 1.0 if eff.value > 0 else -1.0
        approx = " (t approx.)" if test in ("wilcoxon", "mannwhitneyu") else ""
        c.smallest = lambda alpha: f"Δgap {fmt(power.mean_shift(x, y, paired, alpha))}{approx}"
    else:
        eff = effects.ratio(x, y, paired)
        c.effect = _ci("λ1 ratio", eff)
        c.sign = 1.0 if eff.value > 1 else -1.0
        c.smallest = lambda alpha: f"λ1 ratio {fmt(math.exp(power.mean_shift(x, y, paired, alpha)))}"
    if eq_margin:  # "absent": the TOST at the plan's margin, at the claim's α (not Holm-corrected)
        tost = run_test("tost_paired" if paired else "tost_ind", x, y, margin=eq_margin)
        if tost.p is not None and tost.p < spec.alpha:
            within = f"±{fmt(eq_margin)}" if is_gap else f"×/÷ {fmt(plan.lambda_ratio)}"
            c.absent = f"absent (TOST p = {fmt(tost.p)}, within {within})"
    return c


def _test_label(test: str, spec: Spec) -> str:
    on = " on log λ1·ρ̄" if spec.claim == "lambda_follows_rho" else \
        " on log λ1" if spec.claim.startswith("lambda") and test in ("ttest_rel", "welch", "tost_paired",
                                                                      "tost_ind") else ""
    side = f", {spec.alternative}" if spec.alternative in ("greater", "less") and test not in (
        "brown_forsythe", "tost_paired", "tost_ind") else ""
    return f"{NAMES[test]}{on}{side}"


def _ci(name: str, eff: effects.Effect) -> str:
    return f"{name} {fmt(eff.value)} [{fmt(eff.low)}, {fmt(eff.high)}]"


def _equivalence(c: Claim, spec: Spec, test: str, x, y, paired: bool, margin, is_gap: bool, plan: Plan) -> Claim:
    if not margin:
        c.not_tested = "the plan states no gap_margin for this task"
        return c
    res = run_test(test, x, y, margin=margin)
    c.statistic = f"t = {fmt(res.statistic)}; margin " + (f"±{fmt(margin)}" if is_gap
                                                          else f"×/÷ {fmt(plan.lambda_ratio)}")
    c.p, c.decision = res.p, "equivalence"
    eff = effects.difference(x, y, paired) if is_gap else effects.ratio(x, y, paired)
    c.effect = _ci("Δgap" if is_gap else "λ1 ratio", eff)
    return c


def _follows_rho(c: Claim, test: str, a: list[Run], b: list[Run], x, y, paired: bool, margin: float,
                 plan: Plan) -> Claim:
    """TOST on log(λ1 ρ̄) (paired by seed): the observed λ1 ratio over the one 1/ρ̄ predicts, within ×/÷ the
    plan's lambda_ratio. The statistic names both ratios (geometric means over the same runs)."""
    res = run_test(test, x, y, margin=margin)
    if paired:
        _, _, seeds = paired_values(a, b, log_lambda_rho)
        a, b = ([r for r in runs if seed_of(r) in seeds] for runs in (a, b))
        lam = paired_values(a, b, log_lambda)
        rho = paired_values(a, b, lambda r: math.log(abs(r.value("rho_mean"))))
        observed = math.exp(float(np.mean(np.subtract(lam[0], lam[1]))))
        predicted = math.exp(float(np.mean(np.subtract(rho[1], rho[0]))))
    else:
        observed = math.exp(float(np.mean([v for v in map(log_lambda, a) if v is not None]))
                            - float(np.mean([v for v in map(log_lambda, b) if v is not None])))
        predicted = float("nan")
    c.statistic = (f"t = {fmt(res.statistic)}; margin ×/÷ {fmt(plan.lambda_ratio)}; λ1 ratio {fmt(observed)}, "
                   f"1/ρ̄ ratio {fmt(predicted)}")
    c.p, c.decision = res.p, "equivalence"
    c.effect = _ci("observed / predicted", effects.ratio(x, y, paired))
    return c


def _correlation(c: Claim, spec: Spec, runs: list[Run], gap: str, chance, margin) -> Claim:
    pairs = [(log_lambda(r), r.value(gap)) for r in runs]
    pairs = [(lam, g) for lam, g in pairs if lam is not None and g is not None]
    c.n = str(len(pairs))
    c.test = "Spearman r, permutation p (two-sided; sign read)"
    c.score = score_cell([(spec.arm, runs)], chance, margin)
    if len(pairs) < MIN_N:
        c.not_tested = f"fewer than {MIN_N} runs with both values: n={len(pairs)}"
        return c
    lam, g = (np.array(v, dtype=float) for v in zip(*pairs))
    res = run_test("spearman", lam, g, "two-sided")
    c.statistic = f"r = {fmt(res.statistic)}"
    c.effect = f"r {fmt(res.statistic)}"
    c.p, c.decision = res.p, "correlation"
    c.sign = 1.0 if res.statistic > 0 else -1.0
    n = len(pairs)
    c.smallest = lambda alpha: f"|r| {fmt(power.correlation(n, alpha))} (Fisher z)"
    return c
