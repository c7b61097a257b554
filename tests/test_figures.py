"""The figures a reader puts on a slide: one colour per arm in every figure and distinct within one, rules
apart from controls, no overlapping labels, legends beside (never over) the data, log axes with more than one
labelled tick, a toy banner on smoke-size figures, and drawing time linear in history length."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np

from analysis import figures
from analysis.load import Run
from analysis.stats import Correlation, carried_curve, correlation

# the arms of the dms study (docs/study/dms): long names, rules, their _own_lr variants and controls
DMS_ARMS = ["bptt", "eprop", "rflo", "mdgl", "bptt_early", "bptt_matched", "bptt_matched_mean", "bptt_noise",
            "bptt_own_lr", "eprop_lr_rho", "eprop_own_lr", "mdgl_own_lr", "node_perturbation_own_lr",
            "rflo_own_lr", "uoro", "uoro_own_lr"]
CONTROLS = {"bptt_matched", "bptt_matched_mean", "bptt_early", "bptt_noise", "eprop_lr_rho"}


def run(arm: str, seed: int, n_points: int = 30, lam: float = 10.0, gap: float = 0.02) -> Run:
    rng = np.random.default_rng(seed + 1000 * len(arm))
    steps = np.arange(n_points) * 10
    lam_final = lam * (1 + 0.3 * rng.random())
    hist = {"lambda_max": [[int(s), float(lam_final * (1 - math.exp(-s / 100)) + 0.1)] for s in steps],
            "rho": [[int(s), float(0.5 + 0.1 * rng.standard_normal())] for s in steps]}
    summary = {"status": "ok", "rule": arm.split("_own_lr")[0], "task": "dms", "seed": seed, "steps": int(steps[-1]),
               "gap_acc": gap + 0.01 * rng.standard_normal(), "lambda_max": hist["lambda_max"][-1][1],
               "history": hist}
    return Run(path=f"{arm}/{seed}", summary=summary, status="ok", group=arm)


def study(arms=DMS_ARMS, seeds: int = 10, n_points: int = 30) -> dict[str, list[Run]]:
    return {a: [run(a, s, n_points, lam=5.0 + 3 * i) for s in range(seeds)] for i, a in enumerate(arms)}


def correlations(groups) -> dict[str, Correlation]:
    pairs = {g: [(r.value("lambda_max"), r.value("gap_acc")) for r in rs] for g, rs in groups.items()}
    out = {g: correlation([math.log(x) for x, _ in p], [y for _, y in p]) for g, p in pairs.items()}
    every = [xy for p in pairs.values() for xy in p]
    out["all"] = correlation([math.log(x) for x, _ in every], [y for _, y in every])
    return out


def panels(arms=DMS_ARMS):
    return figures.arm_panels(arms, "bptt", lambda a: a in CONTROLS)


def overlaps(boxes) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_arm_colour_is_fixed_across_figures_and_distinct_within_one():
    whole = figures.group_colors(DMS_ARMS)
    subset = figures.group_colors(["bptt", "eprop", "bptt_matched", "bptt_matched_mean"])
    for arm, c in subset.items():
        assert whole[arm] == c == figures.arm_color(arm), arm  # same arm, same colour
    assert whole["bptt"] == "#000000" and whole["eprop"] == figures.ARM_COLORS["eprop"]
    for (a, ca), (b, cb) in itertools.combinations(whole.items(), 2):
        assert figures.distance(ca, cb) >= figures.MIN_COLOR_DISTANCE, (a, b, ca, cb)
    # a name outside the map: the same colour every time, and still distinct from the others in its figure
    assert figures.arm_color("my_new_rule") == figures.arm_color("my_new_rule")
    two = figures.group_colors(["bptt_scaled (rho=0.1)", "bptt_scaled (rho=0.3)"])
    assert figures.distance(*two.values()) >= figures.MIN_COLOR_DISTANCE


def test_panels_keep_rules_and_controls_apart_with_the_reference_in_each():
    got = panels()
    assert [t for t, _ in got] == ["rules", "rules' variants", "controls"]
    for _, arms in got:
        assert arms[0] == "bptt" and len(arms) <= figures.MAX_PER_PANEL
    rules, variants, controls = (set(a) - {"bptt"} for _, a in got)
    assert controls == CONTROLS
    assert not (rules | variants) & CONTROLS
    assert {"eprop_own_lr", "bptt_own_lr", "uoro_own_lr"} <= variants and "eprop" in rules
    many = ["bptt"] + [f"rule{i}" for i in range(15)]
    cut = figures.arm_panels(many, "bptt")
    assert len(cut) == 3 and all(len(a) <= figures.MAX_PER_PANEL for _, a in cut)


def test_no_overlapping_labels_and_legends_beside_the_data():
    groups = study()
    fig = figures.draw_gap_distribution("dms", groups, "gap_acc", panels=panels())
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t.get_window_extent(r) for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 2 and not overlaps(labels)  # long arm names, one row each
    fig = figures.draw_gap_vs_lambda("dms", groups, "gap_acc", correlations(groups), panels=panels())
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        assert not legend.get_window_extent(r).overlaps(ax.get_window_extent(r))  # beside, never over data
        ticks = [t for t in ax.get_xticklabels() if t.get_text()]
        lo, hi = ax.get_xlim()
    assert len([t for t in ticks if lo <= t.get_position()[0] <= hi]) >= 3  # a log axis with more than 1 tick
    figures.close_all()


def test_overview_has_four_panels_with_the_rules_only():
    groups = study()
    arms = panels()[0][1]
    fig = figures.draw_overview("dms", groups, "gap_acc", correlations(groups), None, arms)
    assert len(fig.axes) == 4
    shown = {t.get_text().split("  (")[0] for t in fig.axes[0].get_yticklabels()}
    assert shown == set(arms) and not shown & CONTROLS
    figures.close_all()


def test_toy_banner_on_a_saved_figure(tmp_path):
    fig = figures.draw_gap_distribution("dms", study(["bptt", "eprop"], seeds=2), "gap_acc")
    assert figures.save(fig, tmp_path, "gap_dms", toy=True) == ["gap_dms.png", "gap_dms.pdf"]
    assert any(figures.TOY_NOTE in t.get_text() for t in fig.texts)
    fig = figures.draw_gap_distribution("dms", study(["bptt", "eprop"], seeds=2), "gap_acc")
    figures.save(fig, tmp_path, "gap_dms")
    assert not any(figures.TOY_NOTE in t.get_text() for t in fig.texts)


def best_of(f, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def test_carried_curve_is_linear_in_history_length():
    """4× the points take about 4× the time (a quadratic walk took 16×: issue 33's 20k points 7.5 s, 80k 52 s).
    Runs of different lengths, so that values are carried."""
    def hists(n):
        return [[(s, float(s % 7)) for s in range(0, n * (k + 1) // 5)] for k in range(5)]
    small, large = hists(3000), hists(12000)
    t_small = best_of(lambda: carried_curve(small))
    t_large = best_of(lambda: carried_curve(large))
    assert t_large / t_small < 7, (t_small, t_large)  # measured: linear 4.5×, the quadratic walk 13×
    curve, live = carried_curve([[(0, 1.0), (2, 3.0)], [(0, 5.0), (1, 7.0)]])
    assert list(curve.steps) == [0, 1, 2] and list(curve.mean) == [3.0, 4.0, 5.0]  # 7 carried to step 2
    assert list(live) == [2, 2, 1]


def test_drawing_long_histories_scales_linearly():
    """The overview (λ1 carried over training, ρ over training) with 2,000 and 8,000 points per run: at most 8×
    the time for 4× the points."""
    def draw(n):
        groups = study(["bptt", "eprop", "bptt_noise"], seeds=3, n_points=n)
        fig = figures.draw_overview("dms", groups, "gap_acc", correlations(groups), None, list(groups))
        fig.canvas.draw()
        figures.close_all()
    t_small = best_of(lambda: draw(2000), repeat=2)
    t_large = best_of(lambda: draw(8000), repeat=2)
    assert t_large / t_small < 8, (t_small, t_large)
