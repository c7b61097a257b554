"""The claims table and the report's robustness: every statistic equals scipy.stats on the same numbers,
collapsed runs are flagged, Theorem 1 uses one step's values, malformed records are listed (not a traceback),
an unwritable --out is one line and exit 2, and the same records give a byte-identical report.md."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import report
from analysis import claim_table as cl
from analysis.load import Run

CURV_STEPS = [0, 100, 200, 300]

# (gap mean, gap std, final lambda mean in log units, lambda rise rate) per arm: bio rules sharper and wider
ARMS = {"bptt": (0.10, 0.01, 1.0, 0.002), "eprop": (0.20, 0.05, 3.0, 0.010), "rflo": (0.15, 0.04, 2.5, 0.006),
        "mdgl": (0.2, 0.05, 3.0, 0.01)}


def summary(rule: str, seed: int, rng, n_task: str = "dms", *, gap=None, lam=None, rise=0.005, rule_cfg=None,
            cfg_extra=None, train_acc_hist=None, theory=True, classification=True, status="ok") -> dict:
    """A run record as callbacks/run_record writes it, with the numbers given (or drawn from rng)."""
    lam = lam if lam is not None else float(np.exp(rng.normal(2, 0.5)))
    gap = gap if gap is not None else float(rng.normal(0.1, 0.02))
    lam_hist = [[0, 1.0], [100, float(math.exp(rise * 100))], [200, lam * 0.9], [300, lam]]
    acc_hist = train_acc_hist or [[s, 0.5 + 0.45 * s / 300] for s in CURV_STEPS]
    hist = {"lambda_max": lam_hist, "train_acc": acc_hist, "rho": [[s, 0.3] for s in range(0, 301, 50)],
            "align_norm_ratio": [[s, 0.5] for s in range(0, 301, 50)], "align_cos": [[s, 0.4] for s in range(0, 301, 50)]}
    if theory:  # at the curvature steps, plus one alignment-step point that must be ignored
        hist["theory_stability"] = [[s, 0.01 * v] for s, v in lam_hist] + [[250, 99.0]]
    train_acc = acc_hist[-1][1]
    rec = {"status": status, "rule": rule, "task": n_task, "seed": seed, "steps": 300, "lr": 0.01,
           "train_acc": train_acc if classification else None,
           "test_acc": train_acc - gap if classification else None, "gap_acc": gap if classification else None,
           "train_loss": 0.1, "test_loss": 0.1 + gap, "gap_loss": gap, "lambda_max": lam, "rho_mean": 0.3,
           "history": hist, "error": None, "stopped_at": None, "stop_target": None,
           "config": {"rule": {"name": rule, **(rule_cfg or {})}, "optimizer": {"lr": 0.01}, "task": {"name": n_task},
                      **(cfg_extra or {})}}
    return rec


def study(seed: int = 0, n: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = []
    for rule, (gm, gs, lm, rise) in ARMS.items():
        for s in range(n if rule != "mdgl" else 2):  # mdgl: too few runs, not tested
            recs.append(summary(rule, s, rng, gap=float(rng.normal(gm, gs)), lam=float(np.exp(rng.normal(lm, 0.4))),
                                rise=float(rise * (1 + 0.2 * rng.standard_normal()))))
    for s in range(5):
        recs.append(summary("bptt_scaled", s, rng, lam=float(np.exp(rng.normal(2.9, 0.4))),
                            rule_cfg={"rho": 0.3, "rho_mode": "mean"}))
    for s in range(4):  # stopped at the bio rules' test accuracy: the reference's App. Table 1
        recs.append(summary("bptt", 10 + s, rng, gap=float(rng.normal(0.08, 0.01)),
                            lam=float(np.exp(rng.normal(1.0, 0.4))), cfg_extra={"stop_at_test_acc": 0.8}))
    return recs


def write(root: Path, recs: list[dict]) -> Path:
    for i, r in enumerate(recs):
        d = root / f"{i:03d}_{r.get('rule', 'x')}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(r))
    return root


def claims_rows(text: str) -> list[dict[str, str]]:
    """The claims table as one {column: cell} per row."""
    import re
    lines = text.splitlines()
    start = lines.index("### Claims")
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("| claim |"))
    split = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # noqa: E731
    header = split(lines[head])
    rows = []
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, split(line))))
    return rows


def vals(recs, rule, key, early=False):
    return [r[key] for r in recs if r["rule"] == rule and ("stop_at_test_acc" in r["config"]) == early]


def rise(r):
    (s0, v0), (s1, v1) = r["history"]["lambda_max"][:2]
    return (math.log(v1) - math.log(v0)) / (s1 - s0)


@pytest.fixture(scope="module")
def study_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("claims")
    recs = study()
    root = write(tmp / "sweep", recs)
    assert report.main([str(root), "--out", str(tmp / "out"), "--no-figures"]) == 0  # figures: test_report.py
    return recs, (tmp / "out" / "report.md").read_text(encoding="utf-8"), root, tmp


def test_claims_equal_scipy(study_report):
    """Every rule against bptt, paired by seed: Wilcoxon on the gap, paired t on log λ1, Brown–Forsythe on the
    variances, Spearman within the arm; p as scipy gives it, Holm within the family as statsmodels does."""
    from statsmodels.stats.multitest import multipletests
    recs, text, _, _ = study_report
    rows = {r["claim"]: r for r in claims_rows(text)}

    def paired(rule, key, transform=lambda v: v):
        a = {r["seed"]: transform(r[key]) for r in recs if r["rule"] == rule and "stop_at_test_acc" not in r["config"]}
        b = {r["seed"]: transform(r[key]) for r in recs if r["rule"] == "bptt" and "stop_at_test_acc" not in r["config"]}
        seeds = sorted(set(a) & set(b))
        return [a[s] for s in seeds], [b[s] for s in seeds]

    for bio in ("eprop", "rflo"):
        x, y = paired(bio, "gap_acc")
        row = rows[f"{bio}: larger gap than bptt"]
        assert float(row["p"]) == pytest.approx(sps.wilcoxon(x, y, alternative="greater").pvalue, rel=1e-3)
        assert row["n"] == "6 pairs" and row["test"] == "Wilcoxon signed-rank, greater"
        assert row["effect [95% CI]"].startswith(f"Δgap {np.mean(np.subtract(x, y)):.4g} [")
        x, y = paired(bio, "lambda_max", math.log)
        row = rows[f"{bio}: higher final λ1 than bptt"]
        res = sps.ttest_rel(x, y, alternative="greater")
        assert float(row["p"]) == pytest.approx(res.pvalue, rel=1e-3)
        assert row["statistic"] == f"t = {res.statistic:.4g}"
        b, t = vals(recs, bio, "gap_acc"), vals(recs, "bptt", "gap_acc")
        row = rows[f"{bio}: more variable gap than bptt"]
        assert float(row["p"]) == pytest.approx(sps.levene(b, t, center="median").pvalue, rel=1e-3)
        assert row["n"] == "6 vs 6"
        lam = vals(recs, bio, "lambda_max")
        row = rows[f"gap–λ1 correlation within {bio}"]
        assert row["statistic"] == f"r = {sps.spearmanr(lam, b).statistic:.4g}"

    # Holm within the exploratory gap family of dms: the tested rows' p adjusted together
    fam = [r for r in claims_rows(text) if r["family"] == "dms: gap (exploratory)" and r["p"] != "n/a"]
    adj = multipletests([float(r["p"]) for r in fam], method="holm")[1]
    assert [float(r["p Holm"]) for r in fam] == pytest.approx(list(adj), rel=1e-3)

    # mdgl has 2 runs: its comparisons fall back to unpaired and are not tested, with the reason
    row = rows["mdgl: larger gap than bptt"]
    assert row["verdict"].startswith("not tested (fewer than 3 runs with the value: mdgl n=2")
    assert "unpaired: fewer than 3 seeds pair" in row["n"]
    assert "α per claim" in text and "Holm" in text


def test_theorem1_uses_the_same_steps_values(study_report):
    recs, text, _, _ = study_report
    # theory = 0.01 * lambda at the curvature steps; the 99.0 point at step 250 (no lambda there) is ignored
    run = Run(path="x", summary=recs[0], status="ok")
    assert cl.final_stability(run) == pytest.approx(0.01 * recs[0]["lambda_max"])
    assert all(v < 2 for _, v in cl.stability_points(run))
    no_theory = Run(path="x", summary=summary("bptt", 0, np.random.default_rng(0), theory=False), status="ok")
    assert cl.final_stability(no_theory) is None  # n/a: never rebuilt from rho, lr and some lambda
    finals = [0.01 * r["lambda_max"] for r in recs if r["rule"] == "eprop"]
    row = next(r for r in claims_rows(text) if r["claim"] == "Theorem 1: final \\|ρ\\|ηλ1 < 2 (eprop)")
    assert row["statistic"].startswith(f"{sum(v < 2 for v in finals)}/6 runs' final value < 2")
    assert row["verdict"] == ("held" if all(v < 2 for v in finals) else "not held")


def test_arm_labels():
    def arm(rule, rule_cfg=None, **cfg):
        return cl.arm_of(Run(path="x", summary=summary(rule, 0, np.random.default_rng(0), rule_cfg=rule_cfg,
                                                       cfg_extra=cfg), status="ok"))
    assert arm("bptt") == "bptt"
    assert arm("bptt_scaled", {"rho_mode": "history"}) == "bptt_scaled (ρ history)"
    assert arm("bptt_scaled", {"rho": 0.3, "rho_mode": "mean"}) == "bptt_scaled (mean ρ)"
    assert arm("tbptt", {"window": 10}) == "tbptt w=10"
    assert arm("bptt", stop_at_test_acc=0.8) == "bptt early-stopped"
    assert arm("bptt", stop_at_test_acc_from="runs/eprop_dms_seed*") == "bptt early-stopped"  # the study arm
    assert arm("bptt", stop_at_test_loss_from="runs/eprop_pattern_seed*") == "bptt early-stopped"
    assert arm("bptt", stop_at_test_acc=None, stop_at_train_acc=0.9) == "bptt"
    assert arm("eprop", scheduler={"_target_": "torch.optim.lr_scheduler.StepLR"}) == "eprop + lr decay"
    assert arm("bptt_scaled", {"rho_mode": "history"}, study_arm="bptt_matched") == "bptt_matched"  # the study's


def test_collapse_flag():
    rng = np.random.default_rng(0)
    fell = summary("eprop", 0, rng, train_acc_hist=[[0, 0.5], [100, 0.95], [200, 0.9], [300, 0.7]])
    dipped = summary("eprop", 1, rng, train_acc_hist=[[0, 0.5], [100, 0.95], [200, 0.6], [300, 0.9]])
    assert "0.7 < best 0.95" in cl.collapse(Run("x", fell, "ok"))
    assert cl.collapse(Run("x", dipped, "ok")) is None  # recovered by the end
    reg = summary("bptt", 2, rng, classification=False, train_acc_hist=[[0, 0.5]])
    del reg["history"]["train_acc"]
    reg["history"]["train_loss"] = [[0, 1.0], [100, 0.1], [300, 0.3]]
    reg["train_loss"] = 0.3
    assert cl.collapse(Run("x", reg, "ok")).startswith("train loss 0.3 > 2 × best 0.1")
    reg["train_loss"] = 0.15
    assert cl.collapse(Run("x", reg, "ok")) is None


def test_collapsed_runs_counted_and_bad_records_listed(tmp_path, capsys):
    """A collapsed run, a diverged one and five malformed records: counted per arm, listed, no traceback."""
    rng = np.random.default_rng(1)
    recs = [summary("bptt", s, rng) for s in range(3)]
    recs.append(summary("bptt", 3, rng, train_acc_hist=[[0, 0.5], [100, 0.95], [300, 0.6]]))
    recs.append(summary("eprop", 0, rng, status="diverged"))
    recs[0]["history"]["shift_acc"] = [[0, 0.5], [300, 0.4]]
    root = write(tmp_path / "sweep", recs)
    bad = {"json": "{not json", "list": "[1, 2]", "history": json.dumps({**recs[0], "history": "abc"}),
           "acc": json.dumps({**recs[0], "train_acc": "0.9"}), "points": json.dumps({**recs[0],
                                                                                     "history": {"rho": 3}})}
    for name, text in bad.items():
        (root / f"bad_{name}").mkdir()
        (root / f"bad_{name}" / "summary.json").write_text(text)
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--no-figures"]) == 0  # in-process: no raise
    assert capsys.readouterr().err == ""
    text = (tmp_path / "out" / "report.md").read_text()
    assert "10 run records: 4 ok (1 of them collapsed), 1 excluded (1 diverged), 5 unreadable" in text
    assert "| bptt | 4 | 3 | 1 | 0 | 0 | 0 | 0 |" in text and "| eprop | 1 | 0 | 0 | 1 | 0 | 0 | 0 |" in text
    unreadable = text[text.index("## Unreadable records (5)"):]
    assert "sweep/bad_json/summary.json | JSONDecodeError" in unreadable
    # each malformed record is named with the field at fault (analysis/load.py says why)
    rows = {line.split(" | ")[0].strip("| "): line for line in unreadable.splitlines() if "summary.json" in line}
    assert "'train_acc'" in rows["sweep/bad_acc/summary.json"]
    assert "'history'" in rows["sweep/bad_history/summary.json"]
    assert "history['rho']" in rows["sweep/bad_points/summary.json"]
    assert "sweep/bad_list/summary.json" in unreadable
    assert "Collapsed runs are kept in every statistic" in text
    arms = text[text.index("### Per arm"):]
    assert "| arm | n ok | train_acc | test_acc | shift_acc | learned (all runs) | gap_acc |" in arms  # one run measured it
    assert "| bptt | 4 | " in arms and " | 0.4 ± 0 (n=1) | " in arms


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    root = write(tmp_path / "sweep", [summary("bptt", 0, np.random.default_rng(0))])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert report.main([str(root), "--out", str(blocker / "out")]) == 2  # in-process: no exception escapes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot create --out")


def test_report_is_deterministic(study_report, tmp_path):
    """The same records, read again from another place under the same directory name, give the same bytes."""
    _, text, root, _ = study_report
    moved = tmp_path / "elsewhere" / root.name
    shutil.copytree(root, moved)
    assert report.main([str(moved), "--out", str(tmp_path / "again"), "--no-figures"]) == 0
    again = (tmp_path / "again" / "report.md").read_bytes()
    assert again == text.encode("utf-8")
    assert str(tmp_path) not in again.decode() and str(root) not in again.decode()


def test_claims_matrix_over_tasks():
    rng = np.random.default_rng(2)
    runs = [Run("x", summary(rule, s, rng, n_task=task), "ok") for task in ("dms", "pattern")
            for rule in ("bptt", "eprop") for s in range(3)]
    cl.assign_arms(runs)
    claims = []
    for task in ("dms", "pattern"):
        groups = {g: [r for r in runs if r.task == task and r.group == g] for g in ("bptt", "eprop")}
        claims += cl.task_claims(task, groups, "gap_acc")
    header, rows = cl.claims_matrix(claims)
    assert header == ["claim", "dms", "pattern"]
    assert "eprop: larger gap than bptt" in [r[0] for r in rows]  # a primary claim: no "(exploratory)"
    assert all(v.split(":")[0] in ("held", "not held", "not tested", "not interpretable", "against the claim")
               for r in rows for v in r[1:])


def test_regression_task_uses_the_loss_gap():
    """A task without accuracy (gap_acc null): the claims compare gap_loss."""
    from analysis.stats import gap_key
    rng = np.random.default_rng(3)
    recs = [summary(rule, s, rng, n_task="pattern", classification=False, gap=float(rng.normal(m, 0.05)))
            for rule, m in (("bptt", 0.1), ("eprop", 0.3)) for s in range(4)]
    runs = [Run("x", r, "ok") for r in recs]
    cl.assign_arms(runs)
    gap = gap_key(runs)
    assert gap == "gap_loss"
    groups = {g: [r for r in runs if r.group == g] for g in ("bptt", "eprop")}
    row = next(c for c in cl.task_claims("pattern", groups, gap) if c.claim == "eprop: larger gap than bptt")
    ref = sps.wilcoxon(vals(recs, "eprop", "gap_loss"), vals(recs, "bptt", "gap_loss"), alternative="greater")
    assert row.p == pytest.approx(ref.pvalue) and row.n == "4 pairs"


def test_per_arm_table_reads_the_recorded_norm_ratio(study_report):
    """The |ĝ|/|g| column is the mean of each run's align_norm_ratio history (0.5 in every synthetic run)."""
    text = study_report[1]
    table = text[text.index("### Per arm"):]
    import re
    cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # noqa: E731
    header = cells(next(line for line in table.splitlines() if line.startswith("| arm |")))
    col = next(i for i, c in enumerate(header) if "ĝ" in c)
    row = cells(next(line for line in table.splitlines() if line.startswith("| eprop |")))
    assert row[col] == "0.5 ± 0", (header, row)
