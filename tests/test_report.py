"""report.py on a synthetic sweep: every figure is written, failed runs are listed and not counted, and the
correlations and means printed in report.md equal scipy / numpy computed here on the same numbers."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import report
from analysis.load import Run, assign_groups
from analysis.stats import correlation, mean_curve
from analysis.wandb_source import record_from_wandb

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("gap", "gap_vs_lambda", "lambda", "matched_step", "rho_theory")
STEPS = list(range(0, 1001, 100))


def write_run(root: Path, rule: str, seed: int, status: str = "ok", task: str = "dms", rho: float = 0.1,
              lr: float = 0.03, classification: bool = True, lambda_history: bool = True,
              error: str | None = None, theory: bool = False) -> dict:
    """A summary.json shaped like callbacks/run_record.build_summary, with seeded made-up numbers: the
    truncated rule climbs to larger lambda_max and gap, as in the study."""
    rng = np.random.default_rng(hash((rule, seed, task)) % 2**32)
    sharp = {"bptt": 1.0, "eprop": 3.0, "bptt_scaled": 2.5}.get(rule, 2.0)
    lam_final = sharp * 10 * (1 + 0.3 * rng.standard_normal() ** 2)
    lam = [[s, lam_final * (1 - math.exp(-s / 300)) + 1.0] for s in STEPS]
    rho_v = 1.0 if rule == "bptt" else rho
    rho_hist = [[s, rho_v * (1 + 0.1 * rng.standard_normal())] for s in range(0, 1001, 50)]
    train_acc = 0.95 - 0.02 * rng.random()
    gap = 0.005 * lam_final + 0.03 * rng.standard_normal()
    hist = {"train_acc": [[s, train_acc * s / 1000] for s in STEPS], "rho": rho_hist,
            "gap_loss": [[s, gap] for s in STEPS]}
    if lambda_history:
        hist["lambda_max"] = lam
    if theory:
        hist["theory_stability"] = [[s, rho_v * lr * v] for s, v in lam]  # at the curvature steps
    summary = {
        "status": status, "rule": rule, "task": task, "seed": seed, "steps": 1000, "lr": lr,
        "train_acc": train_acc if classification else None,
        "test_acc": train_acc - gap if classification else None,
        "gap_acc": gap if classification else None,
        "train_loss": 0.2, "test_loss": 0.2 + gap, "gap_loss": gap,
        "lambda_max": lam[-1][1] if lambda_history else None,
        "rho_mean": float(np.mean([v for _, v in rho_hist])),
        "history": hist, "error": error, "wall_time_s": 1.0, "versions": {},
        "config": {"rule": {"name": rule, **({"rho": rho} if rule == "bptt_scaled" else {})},
                   "optimizer": {"lr": lr}, "seed": seed, "task": {"name": task}},
    }
    if status != "ok":  # a run that stopped early: short history, no final curvature
        summary.update(lambda_max=None, steps=37, history={"train_acc": hist["train_acc"][:1]})
    d = root / task / rule / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def sweep(tmp_path):
    """3 rules x 4 seeds of task dms (bptt_scaled at rho=0.1; seed 0 with a recorded theory_stability), one
    rflo run, plus one diverged eprop run and one failed bptt run."""
    root = tmp_path / "sweep"
    runs = [write_run(root, rule, seed, theory=(seed == 0))
            for rule in ("bptt", "eprop", "bptt_scaled") for seed in range(4)]
    runs.append(write_run(root, "rflo", 0))  # a rule with a single run: std 0, correlation n/a
    write_run(root, "eprop", 7, status="diverged", error="run diverged at step 37: loss is not finite")
    write_run(root, "bptt", 8, status="failed", error="RuntimeError: out of memory | really")
    return root, runs


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the body rows of the markdown table after the line starting with heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    sep = next(i for i in range(start, len(lines)) if lines[i].startswith("|---"))
    rows = {}
    for line in lines[sep + 1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0]] = cells[1:]
    return rows


def test_report_figures_excluded_runs_and_statistics(sweep, tmp_path):
    root, runs = sweep
    out = tmp_path / "out"
    assert report.main([str(root), "--out", str(out)]) == 0

    for kind in KINDS:
        for ext in ("png", "pdf"):
            f = out / f"{kind}_dms.{ext}"
            assert f.exists() and f.stat().st_size > 1000, f
    text = (out / "report.md").read_text()
    assert "15 run records: 13 ok (0 of them collapsed), 2 excluded (1 diverged, 1 failed), 0 unreadable" in text

    excluded = table_rows(text, "## Excluded runs")
    assert {(c[0], c[1], c[2]) for c in excluded.values()} == {("dms", "7", "diverged"), ("dms", "8", "failed")}
    assert set(excluded) == {"eprop", "bptt"}
    assert "out of memory \\| really" in text  # the error, with the table's separator escaped
    assert any(c[4].endswith("eprop/seed7/summary.json") for c in excluded.values())

    # correlations: the same pairs through scipy, here
    corr = table_rows(text, "### `gap_acc` vs final λ1")
    groups = {"all runs (pooled)": runs, **{g: [r for r in runs if r["rule"] == g] for g in ("bptt", "eprop")}}
    for name, rs in groups.items():
        lam = [math.log(r["lambda_max"]) for r in rs]  # Pearson on log lambda; Spearman is rank-based
        gap = [r["gap_acc"] for r in rs]
        n, pr, pp, sr, sp = corr[name]
        assert int(n) == len(rs)
        for printed, expected in zip((pr, pp, sr, sp), (*sps.pearsonr(lam, gap), *sps.spearmanr(lam, gap))):
            assert float(printed) == pytest.approx(expected, rel=1e-3)
    assert "bptt_scaled (mean ρ)" in corr  # bptt_scaled is labelled with its rho mode
    assert corr["rflo"] == ["1", "n/a", "n/a", "n/a", "n/a"]

    # per-rule means and stds over the 4 ok seeds (diverged / failed left out)
    table = table_rows(text, "### Per arm")
    for rule, group in (("bptt", "bptt"), ("eprop", "eprop")):
        rs = [r for r in runs if r["rule"] == rule]
        n, train_acc, *_ = table[group]
        assert n == "4"
        mean, std = (float(v) for v in train_acc.split(" ± "))
        values = [r["train_acc"] for r in rs]
        assert mean == pytest.approx(np.mean(values), rel=1e-3)
        assert std == pytest.approx(np.std(values, ddof=1), rel=1e-3)
    assert table["rflo"][0] == "1" and table["rflo"][1].endswith(" ± 0")

    theory = table_rows(text, "### Theorem 1")
    assert theory["bptt"][0] == "1/4"  # only seed 0 recorded theory_stability: never recomputed for the others
    assert theory["bptt"][1] == f"{0.03 * runs[0]['lambda_max']:.4g} ± 0"  # its last point, at a curvature step


def test_report_as_a_script_merges_dirs_tasks_and_handles_sparse_runs(sweep, tmp_path):
    """A second sweep of a regression task (no accuracy), one run per rule and no lambda history, merged
    with --also: gap_loss is used, correlations are n/a, the curvature figures are skipped with a note."""
    root, _ = sweep
    other = tmp_path / "other"
    for rule in ("bptt", "rflo"):
        write_run(other, rule, 0, task="pattern", classification=False, lambda_history=False)
    out = tmp_path / "out2"
    proc = subprocess.run([sys.executable, "report.py", str(root), "--also", str(other), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "17 runs (15 ok, 2 excluded, 0 unreadable)" in proc.stdout
    text = (out / "report.md").read_text()
    pattern = text[text.index("## Task `pattern`"):text.index("\n## Figures")]
    assert "Gap: `gap_loss`" in pattern
    table = table_rows(pattern, "### Per arm")
    assert table["rflo"][:2] == ["1", "0.2 ± 0"]  # train_loss of the single run: std 0
    assert "No ok run of this task has both `gap_loss` and a positive `lambda_max`: no correlation." in pattern
    assert "`lambda_pattern` skipped" in pattern and "`gap_vs_lambda_pattern` skipped" in pattern
    for name in ("gap_pattern.png", "gap_pattern.pdf", "lambda_dms.pdf", "rho_theory_pattern.png"):
        assert (out / name).stat().st_size > 1000
        assert f"`{name}`" in text
    assert not (out / "lambda_pattern.png").exists()
    matrix = table_rows(text, "## Claims across tasks")  # two tasks: a claim x task table of verdicts
    assert matrix["eprop: larger gap than bptt"][0].split(":")[0] in ("held", "not held", "not tested")
    assert matrix["eprop: larger gap than bptt"][1] == "not tested"  # a primary claim stays, pattern has no eprop
    assert matrix["Theorem 1: final \\|ρ\\|ηλ1 < 2 (bptt)"][1].startswith("not tested")


def test_no_runs_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_correlation_undefined_cases_and_reference():
    assert math.isnan(correlation([1.0, 2.0], [3.0, 1.0]).pearson_r)  # 2 points
    assert math.isnan(correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]).spearman_r)  # constant
    c = correlation([1.0, 2.0, None, 4.0, 3.0], [2.0, 1.0, 9.0, 4.0, float("nan")])
    assert c.n == 3 and c.pearson_r == pytest.approx(sps.pearsonr([1, 2, 4], [2, 1, 4])[0])


def test_mean_curve_on_unequal_step_grids():
    curve = mean_curve([[(0, 1.0), (10, 3.0)], [(0, 3.0), (5, 7.0)]])
    assert list(curve.steps) == [0, 5, 10]
    assert list(curve.mean) == [2.0, 7.0, 3.0] and list(curve.n) == [2, 1, 1]
    assert curve.std[0] == pytest.approx(np.std([1.0, 3.0], ddof=1)) and curve.std[1] == 0.0


def test_groups_split_bptt_scaled_rho_and_lr_only_among_ok_runs():
    def run(rule, lr, status="ok", rho=None):
        cfg = {"rule": {"name": rule, "rho": rho}, "optimizer": {"lr": lr}}
        return Run(path="x", summary={"rule": rule, "task": "dms", "lr": lr, "config": cfg}, status=status)
    runs = [run("bptt", 0.03), run("bptt", 1e9, status="failed"), run("bptt_scaled", 0.03, rho=0.25)]
    assign_groups(runs)
    assert [r.group for r in runs] == ["bptt", "bptt", "bptt_scaled (rho=0.25)"]
    runs.append(run("eprop", 0.1))
    assign_groups(runs)
    assert runs[0].group == "bptt (lr=0.03)" and runs[3].group == "eprop (lr=0.1)"


def test_wandb_rows_become_a_run_record():
    """Offline: the conversion of a wandb run's logged rows (no network, wandb not imported)."""
    rows = [{"trainer/global_step": 0, "train/loss": 0.7, "train/acc": 0.5, "test/acc": 0.5, "gap/acc": 0.0,
             "curvature/lambda_max": 2.0, "align/rho": 0.2, "_step": 3},
            {"trainer/global_step": 100, "train/loss": 0.1, "train/acc": 0.9, "test/acc": 0.7, "gap/acc": 0.2,
             "curvature/lambda_max": 8.0, "align/rho": 0.4, "_step": 9}]
    cfg = {"rule": {"name": "eprop"}, "task": {"name": "dms"}, "seed": 3, "optimizer": {"lr": 0.05}}
    rec = record_from_wandb(cfg, rows, "finished")
    r = Run(path="wandb:e/p/id", summary=rec, status=rec["status"])
    assert r.ok and r.seed == 3 and r.lr == 0.05 and r.value("gap_acc") == 0.2 and r.value("lambda_max") == 8.0
    assert r.history("lambda_max") == [(0, 2.0), (100, 8.0)] and r.value("rho_mean") == pytest.approx(0.3)
    rows[1]["train/loss"] = float("nan")
    assert record_from_wandb(cfg, rows, "finished")["status"] == "diverged"
    assert record_from_wandb(cfg, rows, "crashed")["status"] == "failed"
