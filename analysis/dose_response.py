"""Theorem 1 as a dose-response across runs (issue 23): log lambda_1 against log 2/(|rho_bar| eta).

Edge of stability (full-batch GD sharpens until lambda_1 ~ 2/eta, Cohen et al. 2021) with Theorem 1 (a rule
with alignment rho steps |rho| eta along the gradient) predicts lambda_1 ~ 2/(|rho| eta) wherever training
reaches its edge: on log axes, points on a line of slope 1. One point per run, at its last curvature step
(the matched point: curvature is measured at the end of every run):

    lambda_1     the recorded lambda_max at that step
    2/(|rho_bar| eta)  twice the recorded theory_lambda_bound = 1/(|rho_bar| eta) of the same step, rho_bar
                 the mean rho since the previous curvature step and eta that step's learning rate
                 (callbacks/theory.py): never recombined from values of different steps

The fit is ordinary least squares of log lambda_1 on log 2/(|rho_bar| eta): slope with its 95% confidence
interval (t distribution, n - 2 degrees of freedom), intercept, R^2 and n, over all runs and over the runs
at the edge. A run is *at the edge* when |rho_bar| eta lambda_1 >= EDGE = 1, Theorem 1's own bound
(lambda_1 at least half of GD's edge 2/(|rho_bar| eta)): the committed study's e-prop and MDGL runs end near
0.84-1.2, RFLO's near 0.3-0.5. Runs sharing a seed are treated as independent points (the CI is for the fit
over this grid, not a population claim).
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


@dataclass
class DosePoint:
    run: Run
    step: float
    lambda_1: float
    predicted: float  # 2 / (|rho_bar| eta) at the same step

    @property
    def stability(self) -> float:
        """|rho_bar| eta lambda_1 (theory/stability) = 2 lambda_1 / predicted."""
        return 2.0 * self.lambda_1 / self.predicted

    @property
    def at_edge(self) -> bool:
        return self.stability >= EDGE


@dataclass
class Fit:
    n: int
    slope: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    intercept: float = math.nan
    r2: float = math.nan
    n_edge: int = 0


def dose_point(run: Run) -> DosePoint | None:
    """The run's point at its last step with both a positive lambda_max and a finite positive
    theory_lambda_bound, or None."""
    lam = {s: v for s, v in run.history("lambda_max") if v > 0}
    bound = [(s, v) for s, v in run.history("theory_lambda_bound") if s in lam and 0 < v < math.inf]
    if not bound:
        return None
    step, b = bound[-1]
    return DosePoint(run, step, lam[step], 2.0 * b)


def fit(points: list[DosePoint]) -> Fit:
    """OLS of log lambda_1 on log 2/(|rho_bar| eta); nan where n < 3 or the predictor does not vary."""
    result = Fit(n=len(points), n_edge=sum(p.at_edge for p in points))
    if len(points) < 3:
        return result
    x = np.log([p.predicted for p in points])
    y = np.log([p.lambda_1 for p in points])
    if np.ptp(x) == 0:
        return result
    lr = sps.linregress(x, y)
    half = sps.t.ppf(0.975, len(points) - 2) * lr.stderr
    result.slope, result.intercept, result.r2 = float(lr.slope), float(lr.intercept), float(lr.rvalue ** 2)
    result.ci_low, result.ci_high = float(lr.slope - half), float(lr.slope + half)
    return result


def table(points: list[DosePoint]) -> tuple[list[str], list[list[str]]]:
    """Rows: the fit over all runs and over the runs at the edge."""
    header = ["runs", "n", "slope", "95% CI", "intercept", "R²", "at the edge"]
    rows = []
    for label, subset in (("all runs", points), (f"at the edge (|ρ̄|ηλ1 ≥ {EDGE:g})", [p for p in points if p.at_edge])):
        f = fit(subset)
        rows.append([label, str(f.n), markdown.num(f.slope),
                     f"[{markdown.num(f.ci_low)}, {markdown.num(f.ci_high)}]", markdown.num(f.intercept),
                     markdown.num(f.r2), f"{f.n_edge}/{f.n}" + (f" ({f.n_edge / f.n:.0%})" if f.n else "")])
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
                label=f"fit: slope {f.slope:.2f} [{f.ci_low:.2f}, {f.ci_high:.2f}]")
    ax.set(xscale="log", yscale="log", xlabel="2 / (|ρ̄| η)", ylabel="λ1 at the matched point",
           title=f"{task}: Theorem 1 dose-response (n={len(points)}; hollow: below the edge)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    return fig


def section(task: str, runs: list[Run], out: Path, draw_figure: bool = True,
            stem: str | None = None) -> tuple[list[str], list[str]]:
    """report.md lines and figure files (<stem>.png/.pdf, default dose_response_<task>) of the dose-response
    for these ok runs; nothing when fewer than 3 runs have a point or their 2/(|rho_bar| eta) does not vary."""
    points = [p for r in runs if (p := dose_point(r)) is not None]
    if len(points) < 3 or len({round(math.log(p.predicted), 9) for p in points}) < 2:
        return [], []
    header, rows = table(points)
    lines = ["### Theorem 1 dose-response: log λ1 against log 2/(|ρ̄|η)", "",
             "One point per run at its last curvature step: λ1 = `lambda_max`, 2/(|ρ̄|η) = 2 × `theory_lambda_bound` "
             "of the same step (ρ̄ the mean ρ since the previous curvature step, η that step's learning rate). "
             "OLS of log λ1 on log 2/(|ρ̄|η), 95% CI from the t distribution; edge of stability + Theorem 1 "
             f"predicts slope 1 where runs reach the edge. At the edge: |ρ̄|ηλ1 ≥ {EDGE:g} (Theorem 1's bound). "
             "Runs that share a seed count as independent points.", "",
             markdown.table(header, rows), ""]
    edge = {}
    for p in points:
        k, n = edge.get(p.run.group, (0, 0))
        edge[p.run.group] = (k + p.at_edge, n + 1)
    lines += [markdown.table(["arm", "runs at the edge", "median |ρ̄|ηλ1"],
                             [[g, f"{k}/{n}", markdown.num(float(np.median([p.stability for p in points
                                                                             if p.run.group == g])))]
                              for g, (k, n) in edge.items()]), ""]
    if not draw_figure:
        return lines, []
    from analysis.figures import close_all, save
    try:
        return lines, save(draw(task, points), out, stem or f"dose_response_{task}")
    except (ArithmeticError, ValueError) as err:  # e.g. values too large for the axis: the table stays
        close_all()
        return lines + [f"Dose-response figure not drawn: {type(err).__name__}: {err}.", ""], []
