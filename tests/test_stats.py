"""The plan-driven statistics on synthetic records of known structure (a paired effect, no effect, an
equivalence): the p-values equal scipy's paired tests and statsmodels' Holm to 1e-9, TOST verdicts are
right on both sides of the margin, the bootstrap CI covers the true effect, a rule named anything gets its
claims, a gap claim on an arm that did not learn is not interpretable, a negative correlation is "against"."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from analysis import claim_table as cl
from analysis import effects, power, prose
from analysis.hypothesis import run_test
from analysis.load import Run
from analysis.plan import load_plan

PLAN = load_plan()


def record(rule: str, seed: int, gap: float, lam: float, test_acc: float = 0.9, task: str = "dms",
           lam_hist=None, study_arm: str | None = None) -> Run:
    cfg = {"rule": {"name": rule}, "task": {"name": task}, **({"study_arm": study_arm} if study_arm else {})}
    steps = int(lam_hist[-1][0]) if lam_hist else 1000  # a run's last λ1 is at its last step
    summary = {"status": "ok", "rule": rule, "task": task, "seed": seed, "steps": steps, "lr": 0.1,
               "train_acc": test_acc + gap, "test_acc": test_acc, "gap_acc": gap, "train_loss": 0.1,
               "test_loss": 0.1 + gap, "gap_loss": gap, "lambda_max": lam, "config": cfg,
               "history": {"lambda_max": lam_hist or [[0, 1.0], [500, lam / 2], [1000, lam]]}}
    return Run(path=f"{rule}/{seed}", summary=summary, status="ok")


def groups_of(runs: list[Run]) -> dict[str, list[Run]]:
    cl.assign_arms(runs)
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: r.seed):
        out.setdefault(r.group, []).append(r)
    return out


def find(claims, text):
    return next(c for c in claims if c.claim == text)


@pytest.fixture(scope="module")
def known():
    """10 seeds: eprop's gap larger than bptt's by 0.1 (paired: a shared seed effect), its λ1 ×3; mdgl equal
    to bptt in gap and λ1 (equivalence); bptt_matched within ×/÷1.1 of eprop."""
    rng = np.random.default_rng(0)
    seed_gap = rng.normal(0.1, 0.05, 10)  # what a seed does to every arm
    seed_lam = rng.normal(3.0, 0.5, 10)
    runs = []
    for s in range(10):
        runs.append(record("bptt", s, seed_gap[s], math.exp(seed_lam[s])))
        runs.append(record("eprop", s, seed_gap[s] + 0.1 + rng.normal(0, 0.01),
                           math.exp(seed_lam[s] + math.log(3) + rng.normal(0, 0.05))))
        runs.append(record("mdgl", s, seed_gap[s] + rng.normal(0, 0.002),
                           math.exp(seed_lam[s] + rng.normal(0, 0.02))))
        runs.append(record("bptt_scaled", s, seed_gap[s], math.exp(seed_lam[s] + math.log(3) + rng.normal(0, 0.03)),
                           study_arm="bptt_matched"))
    groups = groups_of(runs)
    return groups, cl.task_claims("dms", groups, "gap_acc", PLAN)


def values(groups, arm, key):
    return [r.value(key) for r in groups[arm]]


def test_p_values_equal_scipy_paired_tests_and_holm(known):
    groups, claims = known
    e, b, m = (values(groups, a, "gap_acc") for a in ("eprop", "bptt", "mdgl"))
    le, lb, lm, lmatch = (np.log(values(groups, a, "lambda_max")) for a in ("eprop", "bptt", "mdgl", "bptt_matched"))
    gap = find(claims, "eprop: larger gap than bptt")
    assert gap.p == pytest.approx(sps.wilcoxon(e, b, alternative="greater").pvalue, abs=1e-9)
    assert gap.n == "10 pairs" and gap.verdict == "held"
    lam = find(claims, "eprop: higher final λ1 than bptt")
    assert lam.p == pytest.approx(sps.ttest_rel(le, lb, alternative="greater").pvalue, abs=1e-9)
    # Holm within the primary family "dms: sharpness": the final-λ1 and equal-steps claims
    eq = find(claims, "eprop: higher λ1 than bptt at equal steps")
    adj = multipletests([lam.p, eq.p], method="holm")[1]
    assert (lam.p_holm, eq.p_holm) == pytest.approx(tuple(adj), abs=1e-9)
    # the exploratory gap family: mdgl vs bptt (and nothing else that is tested)
    mdgl_gap = find(claims, "mdgl: larger gap than bptt")
    assert mdgl_gap.p == pytest.approx(sps.wilcoxon(m, b, alternative="greater").pvalue, abs=1e-9)
    fam = [c for c in claims if c.family == mdgl_gap.family and c.p is not None and not c.not_tested]
    adj = multipletests([c.p for c in fam], method="holm")[1]
    assert [c.p_holm for c in fam] == pytest.approx(list(adj), abs=1e-9)
    # TOST: bptt_matched reproduces eprop's λ1 within ×/÷ 1.5
    rep = find(claims, "bptt_matched: reproduces eprop's final λ1")
    assert rep.p == pytest.approx(ttost_paired(lmatch, le, -math.log(1.5), math.log(1.5))[0], abs=1e-9)
    assert rep.verdict == "held"
    # mdgl: no effect, equivalence shown → "absent", not "undetectable"
    mdgl_lam = find(claims, "mdgl: higher final λ1 than bptt")
    assert mdgl_lam.verdict.startswith("not held: absent")
    assert "λ1 ratio" in mdgl_lam.mde


def test_unpaired_fallback_is_welch_written_out():
    """When seeds do not pair, a paired t becomes Welch's t: its statistic and p equal the formula written
    out (unequal variances, Welch–Satterthwaite degrees of freedom), not Student's pooled t."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 3.0, 12)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    result = run_test("welch", x, y, "greater")
    assert result.statistic == pytest.approx(t, rel=1e-12) and result.p == pytest.approx(sps.t.sf(t, df), rel=1e-9)
    ranks = run_test("mannwhitneyu", x, y, "greater")
    assert ranks.p == pytest.approx(sps.mannwhitneyu(x, y, alternative="greater").pvalue, rel=1e-12)


def test_tost_on_both_sides_of_the_margin():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 30)
    noise = rng.normal(0, 0.01, 30)
    margin = math.log(1.5)
    inside = run_test("tost_paired", base + 0.5 * margin + noise, base, margin=margin)
    outside = run_test("tost_paired", base + 1.5 * margin + noise, base, margin=margin)
    assert inside.p < 0.05 < outside.p
    unpaired_in = run_test("tost_ind", rng.normal(0.2 * margin, 0.05, 30), rng.normal(0, 0.05, 30), margin=margin)
    unpaired_out = run_test("tost_ind", rng.normal(2 * margin, 0.05, 30), rng.normal(0, 0.05, 30), margin=margin)
    assert unpaired_in.p < 0.05 < unpaired_out.p


def test_a_rule_named_anything_gets_claims_and_an_unlearned_arm_is_gated():
    rng = np.random.default_rng(2)
    runs = []
    for s in range(6):
        runs.append(record("bptt", s, 0.05 + rng.normal(0, 0.01), math.exp(rng.normal(2, 0.3))))
        runs.append(record("myrule", s, 0.2 + rng.normal(0, 0.01), math.exp(rng.normal(3, 0.3)), test_acc=0.55))
    claims = cl.task_claims("dms", groups_of(runs), "gap_acc", PLAN)
    names = {c.claim for c in claims}
    assert {"myrule: larger gap than bptt", "myrule: higher final λ1 than bptt",
            "myrule: higher λ1 than bptt at equal steps", "gap–λ1 correlation within myrule"} <= names
    gap = find(claims, "myrule: larger gap than bptt")
    assert gap.p < 0.05 and gap.verdict.startswith("not interpretable (myrule learned in 0/6 runs")
    assert gap.score.startswith("0.55 (0/6) vs 0.9 (6/6)")


def test_negative_correlation_is_against_the_claim():
    runs = [record("bptt", s, 0.5 - 0.04 * s, math.exp(1 + 0.2 * s)) for s in range(10)]
    c = find(cl.task_claims("dms", groups_of(runs), "gap_acc", PLAN), "gap–λ1 correlation within bptt")
    assert c.statistic == "r = -1" and c.verdict.startswith("against the claim")


def test_lambda_at_equal_steps_uses_the_common_step():
    """eprop trains longer and sharpens; at the step bptt stopped, both are equal: not higher there."""
    runs = []
    for s in range(5):
        h = [[0, 1.0], [100, 5.0 + s], [200, 8.0 + s]]
        runs.append(record("bptt", s, 0.1, 8.0 + s, lam_hist=h))
        runs.append(record("eprop", s, 0.2, 80.0 + s, lam_hist=h + [[300, 20.0 + s], [900, 80.0 + s]]))
    claims = cl.task_claims("dms", groups_of(runs), "gap_acc", PLAN)
    final = find(claims, "eprop: higher final λ1 than bptt")
    equal = find(claims, "eprop: higher λ1 than bptt at equal steps")
    assert final.verdict == "held"
    assert equal.not_tested is None and "at step 200" in equal.n and equal.effect.startswith("λ1 ratio 1 ")
    assert "5 at exactly equal steps" in equal.n and "interpolated" not in equal.n


def test_lambda_at_equal_steps_interpolates_in_log_lambda_where_a_record_lacks_the_step():
    """A record without λ1 at its pair's common step (made before curvature.at_steps_from): the value is
    interpolated linearly in log λ1 between the measurements around that step, and the row says so."""
    from analysis import equal_steps
    runs = []
    for s in range(5):
        runs.append(record("bptt", s, 0.1, 8.0, lam_hist=[[0, 1.0], [100, 4.0], [250, 8.0]]))
        runs.append(record("eprop", s, 0.2, 80.0, lam_hist=[[0, 1.0], [200, 2.0], [300, 32.0], [900, 80.0]]))
    groups = groups_of(runs)
    eq = equal_steps.paired_log_lambda(groups["eprop"], groups["bptt"])
    assert eq.steps == [250] * 5 and eq.interpolated == 5 and eq.exact == 0
    assert np.exp(eq.x[0]) == pytest.approx(8.0)   # 2 -> 32 over 200..300: halfway in log is 8
    claims = cl.task_claims("dms", groups, "gap_acc", PLAN)
    assert "5 interpolated in log λ1" in find(claims, "eprop: higher λ1 than bptt at equal steps").n


def test_matched_point_claims_use_runs_that_reached_the_target_and_learned_counts_every_run():
    """A capped run (stop target never reached) is left out of matched-point claims and counted as not
    learned; diverged runs count as not learned; too few runs at the target: not interpretable."""
    runs = []
    for s in range(6):
        b = record("bptt", s, 0.02, 5.0 + s)
        e = record("eprop", s, 0.05 + 0.01 * s, 10.0 + s)
        for r in (b, e):
            r.summary["stop_target"] = {"metric": "train/acc", "target": 0.9}
            r.summary["stopped_at"] = 900
        runs += [b, e]
    for r in runs[1::2][2:]:   # eprop seeds 2-5 capped
        r.summary["stopped_at"] = None
    groups = groups_of(runs)
    diverged = record("eprop", 6, 0.0, 1.0)
    diverged.status, diverged.summary["status"] = "diverged", "diverged"
    everyone = {"bptt": groups["bptt"], "eprop": groups["eprop"] + [diverged]}
    claims = cl.task_claims("dms", groups, "gap_acc", PLAN, everyone)
    gap = find(claims, "eprop: larger gap than bptt")
    assert gap.verdict.startswith("not interpretable") and "only 2 eprop" in gap.verdict
    assert "2/7" in gap.score  # learned over every run: 4 capped and 1 diverged did not
    equal = find(claims, "eprop: higher λ1 than bptt at equal steps")  # not a matched-point claim
    assert "6 pairs" in equal.n


def test_smallest_detectable_effect_reference():
    """The paired-t smallest effect at n=10: statsmodels' effect size times the SD of the differences."""
    from statsmodels.stats.power import TTestPower
    x, y = np.arange(10.0), np.arange(10.0) + np.linspace(-1, 1, 10)
    d = TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8, alternative="larger")
    assert power.mean_shift(x, y, True, 0.05) == pytest.approx(d * np.std(x - y, ddof=1), rel=1e-9)
    # the variance-ratio power at that ratio is 0.8 under the F distribution
    r = power.variance_ratio(10, 10, 0.05)
    crit = sps.f.ppf(0.95, 9, 9)
    assert sps.f.sf(crit / r, 9, 9) == pytest.approx(0.8, abs=1e-9)


def test_prose_matches_its_rows(known):
    _, claims = known
    text = "\n".join(prose.summary(claims))
    assert prose.check(text, claims) == []
    primary = next(c for c in claims if c.primary and c.verdict == "held")
    wrong = prose.sentence(primary).replace(" is held — ", " is not held: absent — ")
    assert prose.check(wrong, claims) and "the table says 'held'" in prose.check(wrong, claims)[0]


@pytest.mark.slow
def test_bootstrap_ci_covers_the_true_effect():
    """200 simulated paired data sets (n = 30, true mean difference 0.1): the 95% BCa interval covers 0.1 in
    at least 90% of them; the same for the λ1 ratio (true ratio 2). (At n = 10 the same draw gives 176/200
    = 88%: a bootstrap interval from 10 seeds is somewhat narrow, analysis/effects.py says so.)"""
    rng = np.random.default_rng(3)
    cover_d = cover_r = 0
    for i in range(200):
        base = rng.normal(0, 1, 30)
        x = base + 0.1 + rng.normal(0, 0.1, 30)
        d = effects.difference(x, base, paired=True, seed=i)
        cover_d += d.low <= 0.1 <= d.high
        r = effects.ratio(base + math.log(2) + rng.normal(0, 0.3, 30), base, paired=True, seed=i)
        cover_r += r.low <= 2.0 <= r.high
    assert cover_d >= 180 and cover_r >= 180, (cover_d, cover_r)


def write_records(root, runs: list[Run]):
    import json
    for i, r in enumerate(runs):
        d = root / f"{i:03d}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(r.summary))
    return root


def test_report_md_has_claim_rows_for_a_rule_named_myrule(tmp_path):
    import report
    rng = np.random.default_rng(4)
    runs = [record(rule, s, 0.1 + rng.normal(0, 0.02), math.exp(rng.normal(2, 0.3)))
            for rule in ("bptt", "myrule") for s in range(5)]
    root = write_records(tmp_path / "sweep", runs)
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    for claim in ("myrule: larger gap than bptt", "myrule: more variable gap than bptt",
                  "myrule: higher final λ1 than bptt", "myrule: higher λ1 than bptt at equal steps",
                  "gap–λ1 correlation within myrule"):
        assert f"| {claim} | exploratory | dms: " in text, claim
    assert "Analysis plan: `" in text and "sha256 " in text
    assert "Toy-sized" not in text  # 1000 steps


def test_toy_sized_banner_and_bad_plan(tmp_path, capsys):
    import report
    runs = [record(rule, s, 0.1, 3.0) for rule in ("bptt", "eprop") for s in range(3)]
    for r in runs:
        r.summary["steps"] = 20
    root = write_records(tmp_path / "sweep", runs)
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    assert "**Toy-sized: verdicts not meaningful.**" in (tmp_path / "out" / "report.md").read_text()
    bad = tmp_path / "plan.yaml"
    bad.write_text("tasks:\n  dms:\n    primary:\n      - {claim: gap_smaller, arm: eprop, test: wilcoxon}\n")
    capsys.readouterr()
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown claim 'gap_smaller'" in err and "gap_larger" in err
