"""Theorem 1 as a dose-response across runs: log λ1 against log 2/(|ρ̄| η).

Edge of stability (full-batch GD sharpens until λ1 ~ 2/η, Cohen et al. 2021) with Theorem 1 (a rule with
alignment ρ steps |ρ| η along the gradient) predicts λ1 ~ 2/(|ρ̄| η) wherever training reaches its edge: on
log axes, points on a line of slope 1. One point per run, at the matched point:

    λ1           the record's final `lambda_max` (measured at the run's last step)
    2/(|ρ̄| η)    ρ̄ the run's `rho_mean`, the mean ρ over the whole run (the one definition of ρ̄ every
                 Theorem 1 quantity of the analysis uses; 1 for BPTT), η the run's learning rate (`lr`);
                 runs with a learning-rate scheduler have no single η and are left out

Gates: a point counts when its run learned (ended ok, reached its stop target, test score above chance +
margin: analysis.learning) and did not collapse (analysis.claim_table.collapse). The fit is ordinary least squares
of log λ1 on log 2/(|ρ̄| η) over the gated runs, with a 95% percentile interval from a bootstrap that
resamples *seeds* (every run of a drawn seed together: runs sharing a seed share initialisation and data, so
they are not independent points), per rule as well; with fewer than MIN_SEEDS seeds there is no interval
(three seeds give ten distinct resamples). A sensitivity row fits every run with a point (no gate),
and each row gives the range of the slope when any one run is left out, so a reader sees how much one run
moves it. The runs "at the edge" (|ρ̄| η λ1 >= EDGE = 1, Theorem 1's own bound) are counted per arm; a fit on
them alone selects on the outcome and is shown as descriptive only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from analysis import markdown
from analysis.load import Run

EDGE = 1.0  # |rho_bar| eta lambda_1 at or above this: the run reached its edge (module docstring)
BOOTSTRAP = 2000  # seed-cluster bootstrap resamples (fixed generator: the report regenerates exactly)
MIN_SEEDS = 5     # fewer seeds give too few distinct resamples (3 seeds: 10) for an interval to mean anything


@dataclass
class DosePoint:
    run: Run
    lambda_1: float
    predicted: float  # 2 / (|rho_bar| eta), rho_bar the run's rho_mean

    @property
    def stability(self) -> float:
        """|rho_bar| eta lambda_1 = 2 lambda_1 / predicted."""
        return 2.0 * self.lambda_1 / self.predicted

    @property
    def at_edge(self) -> bool:
        return self.stability >= EDGE

    @property
    def seed(self):
        return self.run.seed


@dataclass
class Fit:
    n: int
    seeds: int = 0
    slope: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    intercept: float = math.nan
    r2: float = math.nan
    loo_low: float = math.nan   # the slope's range when any one run is left out
    loo_high: float = math.nan
    n_edge: int = 0


def dose_point(run: Run) -> DosePoint | None:
    """The run's point (final λ1, 2/(|rho_mean| lr)), or None without a positive λ1, a non-zero rho_mean or a
    positive lr, or with a learning-rate scheduler (e-prop at η/ρ̄, lr decay: no single η, and `lr` is the
    configured one)."""
    scheduler = run.config("scheduler")
    if isinstance(scheduler, dict) and scheduler.get("_target_"):
        return None
    lam, rho, lr = run.value("lambda_max"), run.value("rho_mean"), run.lr
    if lam is None or lam <= 0 or not rho or lr is None or lr <= 0:
        return None
    return DosePoint(run, lam, 2.0 / (abs(rho) * lr))


def ols(points: list[DosePoint]) -> tuple[float, float, float] | None:
    """(slope, intercept, R²) of log λ1 on log 2/(|ρ̄|η); None when n < 3 or the predictor does not vary."""
    if len(points) < 3:
        return None
    x = np.log([p.predicted for p in points])
    y = np.log([p.lambda_1 for p in points])
    if np.ptp(x) == 0:
        return None
    lr = sps.linregress(x, y)
    return float(lr.slope), float(lr.intercept), float(lr.rvalue ** 2)


def fit(points: list[DosePoint]) -> Fit:
    """The OLS fit with its seed-cluster bootstrap CI and leave-one-out range; nan where it cannot be fit."""
    seeds = sorted({p.seed for p in points}, key=str)
    result = Fit(n=len(points), seeds=len(seeds), n_edge=sum(p.at_edge for p in points))
    main = ols(points)
    if main is None:
        return result
    result.slope, result.intercept, result.r2 = main
    by_seed = {s: [p for p in points if p.seed == s] for s in seeds}
    rng = np.random.default_rng(0)
    slopes = []
    for _ in range(BOOTSTRAP if len(seeds) >= MIN_SEEDS else 0):
        drawn = rng.integers(0, len(seeds), len(seeds))
        b = ols([p for i in drawn for p in by_seed[seeds[i]]])
        if b is not None:
            slopes.append(b[0])
    if slopes:
        result.ci_low, result.ci_high = (float(v) for v in np.percentile(slopes, [2.5, 97.5]))
    loo = [f[0] for i in range(len(points)) if (f := ols(points[:i] + points[i + 1:])) is not None]
    if loo:
        result.loo_low, result.loo_high = min(loo), max(loo)
    return result


def fit_row(label: str, points: list[DosePoint]) -> list[str]:
    f = fit(points)
    ci = (f"[{markdown.num(f.ci_low)}, {markdown.num(f.ci_high)}]" if f.seeds >= MIN_SEEDS
          else f"n/a ({f.seeds} seeds; a seed bootstrap needs ≥ {MIN_SEEDS})")
    return [label, str(f.n), str(f.seeds), markdown.num(f.slope), ci,
            markdown.num(f.intercept), markdown.num(f.r2), f"{markdown.num(f.loo_low)} – {markdown.num(f.loo_high)}",
            f"{f.n_edge}/{f.n}"]


def table(gated: list[DosePoint], every: list[DosePoint]) -> tuple[list[str], list[list[str]]]:
    """Rows: the gated fit, one per rule (gated), the sensitivity fit over every run with a point, and the
    gated runs at the edge (selected on the outcome: descriptive)."""
    header = ["fit", "runs", "seeds", "slope", "95% CI (seed bootstrap)", "intercept", "R²",
              "slope, one run left out", "at the edge"]
    rows = [fit_row("gated runs (learned, reached the target, not collapsed)", gated)]
    for rule in sorted({p.run.rule for p in gated}):
        rows.append(fit_row(f"gated, {rule} only", [p for p in gated if p.run.rule == rule]))
    dropped = len(every) - len(gated)
    rows.append(fit_row(f"sensitivity: every run with a point ({dropped} more than gated)", every))
    rows.append(fit_row(f"descriptive: gated runs at the edge (|ρ̄|ηλ1 ≥ {EDGE:g}; selected on the outcome)",
                        [p for p in gated if p.at_edge]))
    return header, rows
def draw(task: str, points: list[DosePoint]):
    """log lambda_1 against log 2/(|rho_bar| eta), one point per run (filled: at the edge), the identity line
    lambda_1 = 2/(|rho_bar| eta), Theorem 1's bound lambda_1 = 1/(|rho_bar| eta) and the fitted line."""
    from analysis.figures import group_colors, plt  # matplotlib only when drawing
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    rules = sorted({p.run.rule for p in points})
    colors = group_colors(rules)
    for rule in rules:
        mine = [p for p in points if p.run.rule == rule]
        for edge in (True, False):
            sel = [p for p in mine if p.at_edge == edge]
            if sel:
                ax.scatter([p.predicted for p in sel], [p.lambda_1 for p in sel], s=22, color=colors[rule],
                           facecolors=colors[rule] if edge else "none", label=rule if edge or
                           not any(p.at_edge for p in mine) else None)
    xs = np.array([p.predicted for p in points])
    span = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 50)
    ax.plot(span, span, color="0.3", lw=1, label="λ1 = 2/(|ρ̄|η)")
    ax.plot(span, span / 2, color="0.3", lw=1, ls=":", label="λ1 = 1/(|ρ̄|η) (Theorem 1)")
    f = fit(points)
    if math.isfinite(f.slope):
        ax.plot(span, np.exp(f.intercept) * span ** f.slope, color="tab:red", lw=1, ls="--",
                label=f"fit: slope {f.slope:.2f}" + (f" [{f.ci_low:.2f}, {f.ci_high:.2f}]"
                                                      if math.isfinite(f.ci_low) else f" ({f.seeds} seeds: no CI)"))
    ax.set(xscale="log", yscale="log", xlabel="2 / (|ρ̄| η)", ylabel="λ1 at the matched point",
           title=f"{task}: Theorem 1 dose-response (n={len(points)}; hollow: below the edge)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    return fig


def section(task: str, runs: list[Run], out: Path, draw_figure: bool = True,
            stem: str | None = None, gate=None) -> tuple[list[str], list[str]]:
    """report.md lines and figure files (<stem>.png/.pdf, default dose_response_<task>) of the dose-response
    for these ok runs; `gate(run) -> bool` keeps the runs the fit counts (default: all). Nothing when fewer
    than 3 runs have a point or their 2/(|ρ̄| η) does not vary."""
    every = [p for r in runs if (p := dose_point(r)) is not None]
    if len(every) < 3 or len({round(math.log(p.predicted), 9) for p in every}) < 2:
        return [], []
    gated = [p for p in every if gate is None or gate(p.run)]
    header, rows = table(gated, every)
    lines = ["### Theorem 1 dose-response: log λ1 against log 2/(|ρ̄|η)", "",
             "One point per run at the matched point: λ1 = the final `lambda_max`, 2/(|ρ̄|η) with ρ̄ = `rho_mean` "
             "(the mean ρ over the whole run; 1 for BPTT) and η the run's lr. OLS of log λ1 on log 2/(|ρ̄|η) over "
             "the gated runs (learned, reached the stop target, not collapsed); 95% CI from a bootstrap over seeds "
             f"({BOOTSTRAP} resamples, every run of a drawn seed together; none below {MIN_SEEDS} seeds); edge of stability + Theorem 1 predicts "
             "slope 1 where runs reach the edge. The last column counts runs at the edge, |ρ̄|ηλ1 ≥ "
             f"{EDGE:g} (Theorem 1's bound).", "",
             markdown.table(header, rows), ""]
    edge = {}
    for p in gated:
        k, n = edge.get(p.run.group, (0, 0))
        edge[p.run.group] = (k + p.at_edge, n + 1)
    lines += [markdown.table(["arm", "gated runs at the edge", "median |ρ̄|ηλ1"],
                             [[g, f"{k}/{n}", markdown.num(float(np.median([p.stability for p in gated
                                                                             if p.run.group == g])))]
                              for g, (k, n) in edge.items()]), ""]
    if not draw_figure or len(gated) < 3:
        return lines, []
    from analysis.figures import close_all, save
    try:
        return lines, save(draw(task, gated), out, stem or f"dose_response_{task}")
    except (ArithmeticError, ValueError) as err:  # e.g. values too large for the axis: the table stays
        close_all()
        return lines + [f"Dose-response figure not drawn: {type(err).__name__}: {err}.", ""], []
