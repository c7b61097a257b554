"""analysis/dose_response.py: Theorem 1's dose-response fit (log lambda_1 on log 2/(|rho_bar| eta)) equals
statsmodels' OLS on the same numbers, takes each run's point from one step, counts the runs at the edge, and
report.py writes its table and figure."""
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


def grid(tmp_path, slope=0.8, noise=0.15):
    """Runs over rules x lr x seed whose log lambda_1 is slope * log 2/(|rho| eta) + c + noise (seeded)."""
    rng = np.random.default_rng(0)
    runs = []
    for rule, rho in (("bptt", 1.0), ("eprop", 0.3), ("rflo", 0.05)):
        for lr in (0.05, 0.1, 0.2):
            for seed in (100, 101):
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
    low, high = ols.conf_int(0.05)[1]
    assert f.n == len(runs) == 18
    assert f.slope == pytest.approx(ols.params[1], rel=1e-10)
    assert f.intercept == pytest.approx(ols.params[0], rel=1e-10, abs=1e-12)
    assert (f.ci_low, f.ci_high) == (pytest.approx(low, rel=1e-8), pytest.approx(high, rel=1e-8))
    assert f.r2 == pytest.approx(ols.rsquared, rel=1e-10)
    assert f.ci_low < 0.8 < f.ci_high  # the slope the grid was made with


def test_point_comes_from_one_step_and_edge_is_counted(tmp_path):
    run = write(tmp_path, record("eprop", 100, 0.1, 0.5, lam_final=30.0), "a")
    p = dr.dose_point(run)
    assert p.step == 1000 and p.lambda_1 == pytest.approx(30.0) and p.predicted == pytest.approx(2 / 0.05)
    assert p.stability == pytest.approx(0.5 * 0.1 * 30.0) and p.at_edge  # 1.5 >= 1
    below = write(tmp_path, record("rflo", 100, 0.1, 0.05, lam_final=30.0), "b")
    assert dr.dose_point(below).stability == pytest.approx(0.15) and not dr.dose_point(below).at_edge
    # the last step with both values: a bound after the last lambda is not paired with an older lambda
    late = record("eprop", 100, 0.1, 0.5, lam_final=30.0)
    late["history"]["theory_lambda_bound"].append([1100, 7.0])
    assert dr.dose_point(write(tmp_path, late, "c")).step == 1000
    # rho = 0 (bound inf) or no lambda: no point
    none = record("eprop", 100, 0.1, 0.5, lam_final=30.0, extra_history={"theory_lambda_bound": [[1000, math.inf]]})
    assert dr.dose_point(write(tmp_path, none, "d")) is None
    assert dr.dose_point(write(tmp_path, record("eprop", 1, 0.1, 0.5, 30.0, extra_history={"lambda_max": []}),
                               "e")) is None
    f = dr.fit([dr.dose_point(run), dr.dose_point(below)])
    assert f.n == 2 and f.n_edge == 1 and math.isnan(f.slope)  # too few for a fit: n/a, not a number


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
    row = next(line for line in text.splitlines() if line.startswith("| all runs |"))
    assert f"| 18 | {f.slope:.4g} | [{f.ci_low:.4g}, {f.ci_high:.4g}] |" in row
    assert f"{f.r2:.4g}" in row and f"{f.n_edge}/18" in row
    assert (out / "dose_response_dms.png").is_file() and (out / "dose_response_dms.pdf").is_file()
