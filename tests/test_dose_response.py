"""analysis/dose_response.py: Theorem 1's dose-response fit (log lambda_1 on log 2/(|rho_bar| eta)) equals
statsmodels' OLS on the same numbers, its CI resamples seeds (runs sharing a seed are not independent), each
run's point is its final λ1 with its whole-run mean ρ, gates drop runs that did not learn, and report.py
writes its table and figure."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import statsmodels.api as sm

import report
from analysis import dose_response as dr
from analysis.load import read_run


def record(rule, seed, lr, rho, lam_final, steps=1000, extra_history=None):
    """A summary.json shaped like the run record: lambda_max at curvature steps, theory_lambda_bound =
    1/(|rho| lr) at the same steps, alignment's rho in between."""
    curv = list(range(0, steps + 1, 250))
    lam = [[s, lam_final * (0.2 + 0.8 * s / steps)] for s in curv]
    hist = {"lambda_max": lam, "theory_lambda_bound": [[s, 1.0 / (abs(rho) * lr)] for s in curv],
            "theory_stability": [[s, abs(rho) * lr * v] for s, v in lam],
            "rho": [[s, rho] for s in range(0, steps + 1, 50)], "train_acc": [[steps, 0.8]]}
    hist.update(extra_history or {})
    return {"status": "ok", "rule": rule, "task": "dms", "seed": seed, "steps": steps, "lr": lr,
            "train_acc": 0.8, "test_acc": 0.7, "gap_acc": 0.1, "train_loss": 0.4, "test_loss": 0.6,
            "gap_loss": 0.2, "lambda_max": lam[-1][1], "rho_mean": rho, "history": hist, "wall_time_s": 1.0,
            "versions": {}, "config": {"rule": {"name": rule}, "optimizer": {"lr": lr}, "seed": seed,
                                       "task": {"name": "dms"}}}


def write(root, summary, name):
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))
    return read_run(str(d / "summary.json"))


SEEDS = (100, 101, 102, 103, 104, 105)


def grid(tmp_path, slope=0.8, noise=0.15, seeds=SEEDS):
    """Runs over rules x lr x seed whose log lambda_1 is slope * log 2/(|rho| eta) + c + noise (seeded)."""
    rng = np.random.default_rng(0)
    runs = []
    for rule, rho in (("bptt", 1.0), ("eprop", 0.3), ("rflo", 0.05)):
        for lr in (0.05, 0.1, 0.2):
            for seed in seeds:
                pred = 2.0 / (rho * lr)
                lam = math.exp(slope * math.log(pred) - 0.4 + noise * rng.standard_normal())
                runs.append(write(tmp_path, record(rule, seed, lr, rho, lam), f"{rule}_{lr}_{seed}"))
    return runs


def test_fit_equals_statsmodels_ols(tmp_path):
    runs = grid(tmp_path)
    points = [dr.dose_point(r) for r in runs]
    f = dr.fit(points)
    x = np.log([2.0 / (abs(r.summary["rho_mean"]) * r.summary["lr"]) for r in runs])
    y = np.log([r.summary["lambda_max"] for r in runs])
    ols = sm.OLS(y, sm.add_constant(x)).fit()
    assert f.n == len(runs) == 54 and f.seeds == 6
    assert f.slope == pytest.approx(ols.params[1], rel=1e-10)
    assert f.intercept == pytest.approx(ols.params[0], rel=1e-10, abs=1e-12)
    assert f.r2 == pytest.approx(ols.rsquared, rel=1e-10)
    assert f.ci_low < f.slope < f.ci_high and abs(f.slope - 0.8) < 0.1  # near the slope the grid was made with
    assert f.loo_low <= f.slope <= f.loo_high


def test_the_ci_resamples_seeds_not_runs(tmp_path):
    """Copies of every run under its own seed add no information: an interval over runs would shrink by
    about sqrt(3) with three copies; the seed-cluster interval stays as wide (within bootstrap noise)."""
    runs = grid(tmp_path / "once")
    copies = [r for r in runs for _ in range(3)]
    once, thrice = dr.fit([dr.dose_point(r) for r in runs]), dr.fit([dr.dose_point(r) for r in copies])
    assert thrice.slope == pytest.approx(once.slope, rel=1e-9)
    ratio = (thrice.ci_high - thrice.ci_low) / (once.ci_high - once.ci_low)
    naive = lambda rs: sm.OLS(np.log([r.summary["lambda_max"] for r in rs]), sm.add_constant(np.log(  # noqa: E731
        [2.0 / (r.summary["rho_mean"] * r.summary["lr"]) for r in rs]))).fit().bse[1]
    assert naive(copies) / naive(runs) < 0.6 and 0.8 < ratio < 1.25


def test_point_is_the_final_lambda_with_the_whole_run_rho_and_edge_is_counted(tmp_path):
    run = write(tmp_path, record("eprop", 100, 0.1, 0.5, lam_final=30.0), "a")
    p = dr.dose_point(run)
    assert p.lambda_1 == pytest.approx(30.0) and p.predicted == pytest.approx(2 / 0.05)
    assert p.stability == pytest.approx(0.5 * 0.1 * 30.0) and p.at_edge  # 1.5 >= 1
    below = write(tmp_path, record("rflo", 100, 0.1, 0.05, lam_final=30.0), "b")
    assert dr.dose_point(below).stability == pytest.approx(0.15) and not dr.dose_point(below).at_edge
    # rho_mean, not the last curvature window's rho: a late window of rho 0.1 does not change the point
    late = record("eprop", 100, 0.1, 0.5, lam_final=30.0, extra_history={"theory_lambda_bound": [[1000, 100.0]]})
    assert dr.dose_point(write(tmp_path, late, "c")).predicted == pytest.approx(2 / 0.05)
    zero = record("eprop", 100, 0.1, 0.5, lam_final=30.0)
    zero["rho_mean"] = 0.0
    assert dr.dose_point(write(tmp_path, zero, "d")) is None
    nolam = record("eprop", 1, 0.1, 0.5, 30.0)
    nolam["lambda_max"] = None
    assert dr.dose_point(write(tmp_path, nolam, "e")) is None
    f = dr.fit([dr.dose_point(run), dr.dose_point(below)])
    assert f.n == 2 and f.n_edge == 1 and math.isnan(f.slope)  # too few for a fit: n/a, not a number


def test_gated_fit_drops_runs_and_the_sensitivity_row_keeps_them(tmp_path):
    """A dead run far off the line moves the ungated slope; the gate (here: test accuracy) drops it and the
    sensitivity row shows both; per-rule rows fit each rule alone."""
    runs = grid(tmp_path, noise=0.05)
    dead = record("rflo", 100, 0.2, 0.05, lam_final=0.001)
    dead["test_acc"] = 0.5
    runs.append(write(tmp_path, dead, "dead"))
    lines, _ = dr.section("dms", runs, tmp_path, draw_figure=False, gate=lambda r: r.value("test_acc") > 0.6)
    text = "\n".join(lines)
    gated = dr.fit([dr.dose_point(r) for r in runs[:-1]])
    every = dr.fit([dr.dose_point(r) for r in runs])
    assert abs(every.slope - gated.slope) > 0.05
    assert f"| gated runs (learned, reached the target, not collapsed) | 54 | 6 | {gated.slope:.4g} |" in text
    assert f"| sensitivity: every run with a point (1 more than gated) | 55 | 6 | {every.slope:.4g} |" in text
    assert "| gated, eprop only | 18 | 6 |" in text and "selected on the outcome" in text


def test_no_section_when_the_dose_does_not_vary(tmp_path):
    runs = [write(tmp_path, record("bptt", s, 0.1, 1.0, 10.0 + s), f"r{s}") for s in range(4)]
    assert dr.section("dms", runs, tmp_path) == ([], [])


def test_report_writes_the_table_and_the_figure(tmp_path):
    grid(tmp_path / "sweep")
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Theorem 1 dose-response" in text
    f = dr.fit([dr.dose_point(read_run(str(p))) for p in sorted((tmp_path / "sweep").glob("*/summary.json"))])
    row = next(line for line in text.splitlines() if line.startswith("| gated runs"))
    assert f"| 54 | 6 | {f.slope:.4g} | [{f.ci_low:.4g}, {f.ci_high:.4g}] |" in row
    assert f"{f.r2:.4g}" in row and f"{f.n_edge}/54" in row
    assert (out / "dose_response_dms.png").is_file() and (out / "dose_response_dms.pdf").is_file()


def test_runs_with_a_scheduler_have_no_point(tmp_path):
    """e-prop at η/ρ̄ and the lr-decay arms: their `lr` is the configured η, not the one they trained at."""
    summary = record("eprop", 100, 0.1, 0.5, lam_final=30.0)
    summary["config"]["scheduler"] = {"_target_": "modules.lr_over_rho.over_rho", "rho_from": "x"}
    assert dr.dose_point(write(tmp_path, summary, "s")) is None


def test_no_interval_from_too_few_seeds(tmp_path):
    """Three seeds give ten distinct seed resamples: no interval, and the row says why."""
    runs = grid(tmp_path, seeds=(100, 101, 102))
    f = dr.fit([dr.dose_point(r) for r in runs])
    assert f.seeds == 3 and math.isfinite(f.slope) and math.isnan(f.ci_low)
    lines, _ = dr.section("dms", runs, tmp_path, draw_figure=False)
    assert "n/a (3 seeds; a seed bootstrap needs ≥ 5)" in "\n".join(lines)
