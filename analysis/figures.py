"""The study's figures, drawn from runs already grouped and statistics already computed (analysis.stats).
Each draw_* function returns a matplotlib Figure, or None when there is nothing to draw; save() writes it as
PNG and PDF.

What every figure keeps to:
- one colour per arm, the same in every figure (`arm_color`: a fixed map, the reference paper's BPTT black,
  e-prop magenta, RFLO yellow, MDGL green, step-length-matched BPTT blue; a rule's `_own_lr` arm a darker
  shade of the rule's colour; a name outside the map a colour from its name's hash), made distinct within a
  figure by `group_colors`;
- rules and controls apart (`arm_panels`: the reference and the rules under test, the rules' variants, the
  controls; each panel also draws the reference), at most MAX_PER_PANEL arms in a panel;
- arm names on the y axis of horizontal strip plots (long names never collide), legends outside the axes;
- log axes with 1-2-5 ticks labelled when the data span less than two decades (`readable_log_axis`);
- over-training curves as small multiples (one arm against the reference per panel), so that bands over 10
  seeds never pile up;
- drawing time linear in history length (analysis.stats.carried_curve walks each history once).
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib import ticker  # noqa: E402

from analysis.claim_table import collapse  # noqa: E402
from analysis.load import Run  # noqa: E402
from analysis.stats import Correlation, Curve, carried_curve, mean_curve  # noqa: E402

# The fixed arm -> colour map. Rules first (the reference paper's colours for its four), then the controls.
ARM_COLORS = {
    "bptt": "#000000", "eprop": "#c51b7d", "rflo": "#e6ab02", "mdgl": "#1b9e77", "tbptt": "#d95f02",
    "bptt_scaled": "#2166ac", "uoro": "#7570b3", "node_perturbation": "#66a61e", "rtrl": "#8c510a",
    "kf_rtrl": "#bf812d", "modprop": "#35978f", "kernl": "#e7298a", "dni": "#17becf",
    "kolen_pollack": "#9e9ac8",
    # controls
    "bptt_matched": "#2166ac", "bptt_matched_mean": "#67a9cf", "bptt_early": "#8c6d31",
    "bptt_noise": "#d6604d", "eprop_lr_rho": "#f1b6da", "bptt_lr_decay": "#4d4d4d",
}
VARIANT_SHADES = {"_own_lr": -0.45}  # suffix -> shade of the base arm's colour (< 0 darker, > 0 lighter)
SPARE_COLORS = ["#7f3b08", "#542788", "#b35806", "#1a9850", "#c2a5cf", "#a6dba0", "#fdb863", "#80cdc1",
                "#de77ae", "#4393c3", "#8073ac", "#d9ef8b"]
REFERENCE_LW = 1.0  # the reference as drawn (its own colour, thinner, no band) in another arm's panel
MIN_COLOR_DISTANCE = 0.15  # two arms of one figure differ at least this much in RGB (0-1 per channel)
MAX_PER_PANEL = 7  # arms in one panel, the reference included
OVERVIEW_BANDS = 4  # the overview draws spread bands up to this many arms per panel
GAP_LABELS = {"gap_acc": "generalization gap (train acc − test acc)",
              "gap_loss": "generalization gap (test loss − train loss)"}
TOY_NOTE = "TOY-SIZED RUNS (smoke size): nothing drawn here is a finding"

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.spines.top": False,
                     "axes.spines.right": False, "legend.frameon": False, "font.size": 9})


def shade(color: str, amount: float) -> str:
    """`color` mixed with white (amount > 0) or black (amount < 0) by |amount|; black lightens to grey."""
    rgb = np.array(mcolors.to_rgb(color))
    if amount < 0 and rgb.max() < 0.05:  # black cannot get darker: its variant is grey
        amount = 0.55
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return mcolors.to_hex(rgb + abs(amount) * (target - rgb))


def text_color(color: str) -> str:
    """A label's colour: the arm's, a little darker so that light colours read on white."""
    return color if np.array(mcolors.to_rgb(color)).max() < 0.05 else shade(color, -0.2)


def distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.array(mcolors.to_rgb(a)) - np.array(mcolors.to_rgb(b))))


def arm_name(group: str) -> str:
    """The arm of a group label: `bptt_scaled (rho=0.1)` -> `bptt_scaled`."""
    return group.split(" (")[0]


def arm_color(group: str) -> str:
    """The arm's fixed colour: ARM_COLORS, else a variant's shade of its base arm (`eprop_own_lr`), else a
    control of a new rule coloured as its control family (`bptt_matched_<rule>`), else a colour from the
    name's hash (stable across figures and runs)."""
    name = arm_name(group)
    if name in ARM_COLORS:
        return ARM_COLORS[name]
    for suffix, amount in VARIANT_SHADES.items():
        if name.endswith(suffix) and name[: -len(suffix)] in ARM_COLORS:
            return shade(ARM_COLORS[name[: -len(suffix)]], amount)
    prefixes = [a for a in ARM_COLORS if name.startswith(a + "_")]
    if prefixes:
        return shade(ARM_COLORS[max(prefixes, key=len)], 0.3)
    return SPARE_COLORS[zlib.crc32(name.encode()) % len(SPARE_COLORS)]


def group_colors(groups: list[str]) -> dict[str, str]:
    """A colour per group, distinct within this set: each group's arm_color, and where it would come within
    MIN_COLOR_DISTANCE of an earlier group's (two bptt_scaled arms with different rho, a hash collision), the
    later group gets a shade of it, else a spare colour."""
    colors: dict[str, str] = {}
    for g in groups:
        base = arm_color(g)
        options = [base] + [shade(base, a) for a in (0.45, -0.4, 0.7, -0.65)] + SPARE_COLORS
        colors[g] = next((c for c in options
                          if all(distance(c, u) >= MIN_COLOR_DISTANCE for u in colors.values())), base)
    return colors


def arm_panels(groups: list[str], reference: str | None = "bptt", is_control=None) -> list[tuple[str, list[str]]]:
    """Panels for a figure that keeps rules and controls apart: [(title, groups)], the reference first in
    each. "rules": the reference and the rules under test; "rules' variants": arms named <another arm>_<...>
    that are not controls (eprop_own_lr); "controls": arms `is_control` names. A panel with more than
    MAX_PER_PANEL arms is cut into several. Without `is_control` every non-reference arm is a rule."""
    is_control = is_control or (lambda g: False)
    ref = [g for g in groups if arm_name(g) == reference][:1]
    rest = [g for g in groups if g not in ref]
    names = {arm_name(g) for g in groups}
    controls = [g for g in rest if is_control(arm_name(g))]
    variants = [g for g in rest if g not in controls
                and any(arm_name(g).startswith(n + "_") for n in names if n != arm_name(g))]
    rules = [g for g in rest if g not in controls and g not in variants]
    panels = []
    for title, arms in (("rules", rules), ("rules' variants", variants), ("controls", controls)):
        if not arms:
            continue
        size = MAX_PER_PANEL - len(ref)
        chunks = [arms[i:i + size] for i in range(0, len(arms), size)]
        for k, chunk in enumerate(chunks):
            panels.append((title + (f" ({k + 1}/{len(chunks)})" if len(chunks) > 1 else ""), ref + chunk))
    return panels or [("reference", ref)]


def save(fig, out_dir: Path, name: str, toy: bool = False) -> list[str]:
    """Write fig as <name>.png and <name>.pdf in out_dir; return the file names. `toy`: runs of smoke size,
    a red banner on top says so."""
    if toy:
        fig.text(0.5, 1.0, TOY_NOTE, ha="center", va="bottom", fontsize=11, color="white", weight="bold",
                 bbox=dict(facecolor="firebrick", edgecolor="none", pad=3))
    files = []
    for ext in ("png", "pdf"):
        # no creation date in the PDF: the same records give the same file
        fig.savefig(Path(out_dir) / f"{name}.{ext}", bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        files.append(f"{name}.{ext}")
    plt.close(fig)
    return files


def close_all() -> None:
    """Close every open figure (after a drawing failed half way)."""
    plt.close("all")


def wide_range(values) -> bool:
    """Positive values spanning more than two decades read better on a log axis."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return len(v) > 1 and v.min() > 0 and v.max() / v.min() > 100


def log_curves(curves) -> bool:
    """A log axis for mean +/- std curves only when they span two decades and every band stays above 0
    (a band reaching below 0 would be cut off at the axis bottom and misread)."""
    return (wide_range(np.concatenate([c.mean for c in curves]))
            and all((c.mean - c.std).min() > 0 for c in curves))


def readable_log_axis(ax, axis: str = "x") -> None:
    """Label a log axis so that it reads: plain numbers (0.5, 20, 300), and 1-2-5 ticks (every integer
    multiple under half a decade) when the axis spans less than three decades, so it never shows one tick."""
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if not (lo > 0 and hi > lo):
        return
    decades = math.log10(hi / lo)
    subs = (1.0,) if decades >= 3 else (1.0, 2.0, 5.0) if decades >= 0.5 else tuple(range(1, 10))
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    which.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(ticker.NullFormatter())


def fmt_corr(c: Correlation, sep: str = ", ") -> str:
    """"Pearson r (p), Spearman r_s (p)" for a legend or title; Spearman is r_s, never rho (rho is alignment)."""
    if math.isnan(c.pearson_r):
        return "r n/a"
    return f"r={c.pearson_r:.2f} (p={c.pearson_p:.2g}){sep}r$_s$={c.spearman_r:.2f} (p={c.spearman_p:.2g})"


def strip_rows(ax, groups: dict[str, list[float]], colors: dict[str, str], seed: int = 0) -> None:
    """Horizontal box (quartiles, whiskers 1.5 IQR) plus every run as a jittered point, one row per group,
    the first group on top; arm names and n on the y axis, where long names have room."""
    rng = np.random.default_rng(seed)  # fixed jitter: the same data always draws the same figure
    names = list(groups)
    for i, g in enumerate(names):
        v = np.asarray(groups[g], dtype=float)
        if len(v) == 0:
            continue
        ax.boxplot(v, positions=[i], widths=0.55, orientation="horizontal", showfliers=False, patch_artist=True,
                   boxprops=dict(facecolor=colors[g], alpha=0.18, edgecolor=colors[g]),
                   medianprops=dict(color=colors[g], lw=1.6), whiskerprops=dict(color=colors[g]),
                   capprops=dict(color=colors[g]))
        ax.scatter(v, i + rng.uniform(-0.15, 0.15, len(v)), s=16, color=colors[g], zorder=3,
                   edgecolor="white", linewidth=0.5)
    ax.set_yticks(range(len(names)), [f"{g}  (n={len(groups[g])})" for g in names])
    for label, g in zip(ax.get_yticklabels(), names):
        label.set_color(text_color(colors[g]))
    ax.set_ylim(len(names) - 0.4, -0.6)  # first group on top
    ax.grid(axis="x", color="0.92", lw=0.6)
    ax.set_axisbelow(True)


def robust_log_limits(values, fence: float = 3.0) -> tuple[float, float] | None:
    """Log-axis limits around the bulk of positive values: the quartiles of log10 ± `fence` interquartile
    ranges (at least half a decade either side), never wider than the data. One outlier (λ1 ≈ 1e-3 among
    values near 20) can then not stretch the axis over six decades; points outside are drawn clipped."""
    v = np.log10([x for x in values if x is not None and math.isfinite(x) and x > 0])
    if len(v) == 0:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    spread = max(q3 - q1, 0.5)
    lo, hi = max(v.min(), q1 - fence * spread), min(v.max(), q3 + fence * spread)
    pad = 0.05 * max(hi - lo, 0.2)
    return 10 ** (lo - pad), 10 ** (hi + pad)


def add_notes(fig, notes: list[str] | None) -> None:
    """Where arms went that have no point here (e.g. "rflo: 10 of 10 diverged"), under the figure."""
    if notes:
        fig.text(0.01, 0.0, "; ".join(notes), fontsize=7, color="firebrick", ha="left", va="top")


def _panels(groups, panels) -> list[tuple[str, list[str]]]:
    """The given panels restricted to these groups (empty ones dropped), or one panel of all groups."""
    if panels is None:
        return [("", list(groups))]
    out = [(t, [g for g in gs if g in groups]) for t, gs in panels]
    return [(t, gs) for t, gs in out if gs]


def draw_gap_distribution(task: str, groups: dict[str, list[Run]], gap: str, notes: list[str] | None = None,
                          panels: list[tuple[str, list[str]]] | None = None) -> plt.Figure | None:
    """Fig. 2A-C: final generalization gap over seeds per arm, one row per arm, rules and controls in separate
    panels (`panels`, from arm_panels) sharing the gap axis; notes name the arms' runs that did not end ok."""
    values = {g: [r.value(gap) for r in runs if r.value(gap) is not None] for g, runs in groups.items()}
    values = {g: v for g, v in values.items() if v}
    chosen = [(t, [g for g in gs if g in values]) for t, gs in _panels(groups, panels)]
    chosen = [(t, gs) for t, gs in chosen if gs]
    if not chosen:
        return None
    colors = group_colors(list(groups))
    heights = [len(gs) + 1.2 for _, gs in chosen]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(7.0, 0.32 * sum(heights) + 1.0), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    for ax, (title, gs) in zip(axes[:, 0], chosen):
        ax.axvline(0, color="0.6", lw=0.8, ls="--")
        strip_rows(ax, {g: values[g] for g in gs}, colors)
        ax.set_title(title, loc="left", fontsize=9)
    axes[-1, 0].set_xlabel(GAP_LABELS[gap])
    fig.suptitle(f"{task}: generalization gap at the end of training (one point per run)")
    add_notes(fig, notes)
    return fig


def _scatter_gap_lambda(ax, pts, colors, lo, hi, legend_corr: dict[str, Correlation] | None) -> int:
    """One point per run at (λ1, gap); points beyond [lo, hi] drawn as triangles at the edge. Returns how many
    were clipped."""
    n_clipped = 0
    for g, p in pts.items():
        x, y = np.array(p).T
        inside = (x >= lo) & (x <= hi)
        label = f"{g} (n={len(p)})"
        if legend_corr and g in legend_corr and not math.isnan(legend_corr[g].pearson_r):
            label += f": r={legend_corr[g].pearson_r:.2f}"
        ax.scatter(x[inside], y[inside], s=22, color=colors[g], edgecolor="white", linewidth=0.5, zorder=3,
                   label=label)
        if (~inside).any():  # drawn at the axis edge, pointing to where they lie
            n_clipped += int((~inside).sum())
            for xv, yv in zip(x[~inside], y[~inside]):
                ax.scatter([lo if xv < lo else hi], [yv], marker="<" if xv < lo else ">", s=40, color=colors[g],
                           zorder=4, clip_on=False)
    return n_clipped


def draw_gap_vs_lambda(task: str, groups: dict[str, list[Run]], gap: str, corr: dict[str, Correlation],
                       pooled: list[str] | None = None,
                       panels: list[tuple[str, list[str]]] | None = None) -> plt.Figure | None:
    """Fig. 2D-F: final gap against final lambda_max (robust log axis shared by the panels: points beyond
    robust_log_limits drawn as triangles at the edge; runs with lambda_max <= 0 cannot be drawn there and are
    left out, as from the correlations), one point per run, one panel per group of arms (`panels`); the pooled
    correlation (the same set as the report's table) in the title, each arm's Pearson r in the legend."""
    pts = {g: [(r.value("lambda_max"), r.value(gap)) for r in runs
               if (r.value("lambda_max") or 0) > 0 and r.value(gap) is not None] for g, runs in groups.items()}
    pts = {g: p for g, p in pts.items() if p}
    chosen = [(t, [g for g in gs if g in pts]) for t, gs in _panels(groups, panels)]
    chosen = [(t, gs) for t, gs in chosen if gs]
    if not chosen:
        return None
    colors = group_colors(list(groups))
    limits = robust_log_limits([x for p in pts.values() for x, _ in p])
    lo, hi = limits if limits else (0, math.inf)
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8.0, 3.3 * len(chosen) + 0.6), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    n_clipped = 0
    fell = [(r.value("lambda_max"), r.value(gap)) for runs in groups.values() for r in runs
            if (r.value("lambda_max") or 0) > 0 and r.value(gap) is not None and collapse(r)]
    for ax, (title, gs) in zip(axes[:, 0], chosen):
        n_clipped += _scatter_gap_lambda(ax, {g: pts[g] for g in gs}, colors, lo, hi, corr)
        if fell and ax is axes[0, 0]:  # collapsed runs stay in the statistics; ringed so that a reader sees them
            x, y = np.array(fell).T
            ax.scatter(x, y, s=90, facecolor="none", edgecolor="red", linewidth=1.0, zorder=4,
                       label=f"collapsed run (n={len(fell)})")
        ax.set_xscale("log")
        if limits:
            ax.set_xlim(lo, hi)
        ax.set_ylabel(GAP_LABELS[gap], fontsize=8)
        ax.set_title(title, loc="left", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), labelspacing=0.5)
    for ax in axes[:, 0]:
        readable_log_axis(ax, "x")
    axes[-1, 0].set_xlabel("final top Hessian eigenvalue $\\lambda_1$ (log)"
                           + (f"; {n_clipped} run(s) beyond the axis drawn as triangles at its edge"
                              if n_clipped else ""))
    what = (f"pooled {len(pooled)} arms (reference + rules, no controls)" if pooled is not None else "all runs")
    fig.suptitle(f"{task}: gap vs curvature. {what}, {corr['all'].n} runs:\nPearson (log $\\lambda_1$) "
                 + fmt_corr(corr["all"]).replace("r$_s$", "Spearman r$_s$"), fontsize=9)
    return fig


def plot_curve(ax, curve: Curve, color: str, label: str | None, band: bool = True) -> None:
    ax.plot(curve.steps, curve.mean, color=color, lw=1.5, label=label,
            marker="o" if len(curve.steps) < 4 else None, ms=3)
    if band:
        ax.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std, color=color, alpha=0.15,
                        lw=0)


def curves_for(groups: dict[str, list[Run]], key: str) -> dict[str, tuple[Curve, int]]:
    """{group: (mean curve of history[key] over the group's runs, number of runs with that history)}."""
    out = {}
    for g, runs in groups.items():
        hists = [h for h in (r.history(key) for r in runs) if h]
        curve = mean_curve(hists)
        if curve is not None:
            out[g] = (curve, len(hists))
    return out


def log_curves_for(groups: dict[str, list[Run]], key: str) -> dict[str, tuple[Curve, int]]:
    """Like curves_for, on log values (positive points only): a curve of mean and std of log history[key]."""
    out = {}
    for g, runs in groups.items():
        hists = [h for h in ([(s, math.log(v)) for s, v in r.history(key) if v > 0] for r in runs) if h]
        curve = mean_curve(hists)
        if curve is not None:
            out[g] = (curve, len(hists))
    return out


def plot_log_curve(ax, curve: Curve, color: str, label: str | None, band: bool = True, lw: float = 1.5) -> None:
    """A curve of log values drawn on a log axis: geometric mean, band ×/÷ the geometric std."""
    ax.plot(curve.steps, np.exp(curve.mean), color=color, lw=lw, label=label,
            marker="o" if len(curve.steps) < 4 else None, ms=3)
    if band:
        ax.fill_between(curve.steps, np.exp(curve.mean - curve.std), np.exp(curve.mean + curve.std), color=color,
                        alpha=0.18, lw=0)


def carried_log_curves(groups: dict[str, list[Run]], key: str) -> dict[str, tuple[Curve, np.ndarray, int]]:
    """{group: (curve of log history[key], each run's last value carried forward; runs still measured per
    step; number of runs)}."""
    out = {}
    for g, runs in groups.items():
        hists = [h for h in ([(s, math.log(v)) for s, v in r.history(key) if v > 0] for r in runs) if h]
        got = carried_curve(hists)
        if got is not None:
            out[g] = (got[0], got[1], len(hists))
    return out


def _carried_panel(ax, curve: Curve, live: np.ndarray, n: int, color: str, label: str | None,
                   band: bool = True, counts: bool = True) -> None:
    """One arm's λ1 curve: solid while every run is measured, dashed once some are carried, with the number
    still measured written where it changes (`counts`)."""
    plot_log_curve(ax, curve, color, label, band=band)
    carried = live < n
    if carried.any():
        k = int(np.argmax(carried))
        ax.plot(curve.steps[k:], np.exp(curve.mean[k:]), color="white", lw=1.0, ls=(0, (2, 2)))
        if counts:
            changes = [i for i in range(k, len(curve.steps)) if i == k or live[i] != live[i - 1]]
            for i in changes:
                ax.annotate(str(int(live[i])), (curve.steps[i], np.exp(curve.mean[i])), fontsize=6,
                            color=text_color(color), textcoords="offset points", xytext=(2, 3))


def draw_lambda_trajectories(task: str, groups: dict[str, list[Run]], ax=None, title: str | None = None,
                             colors: dict[str, str] | None = None, notes: list[str] | None = None,
                             panels: list[tuple[str, list[str]]] | None = None, reference: str | None = "bptt"):
    """Fig. 3: lambda_max over training on a log axis, geometric mean ×/÷ geometric std over seeds per group
    (positive values only), each run's last value carried forward after it stopped (no survivor bias); the
    line is solid while every run is still measured, dashed once some are carried, with the number still
    measured written where it changes. Small multiples: one panel per arm (in the order of `panels`, titled
    "rule"/"control"), the reference's curve in grey in each, shared axes. With `ax`, every group is drawn
    into that one axis (few groups: matched_step) and `ax` is returned. None when no run has a positive
    lambda_max history."""
    curves = carried_log_curves(groups, "lambda_max")
    if not curves:
        return None
    colors = colors or group_colors(list(groups))
    if ax is not None:
        for g, (curve, live, n) in curves.items():
            _carried_panel(ax, curve, live, n, colors[g], f"{g} (n={n})", counts=False)
        ax.set_yscale("log")
        readable_log_axis(ax, "y")
        ax.set_xlabel("training step (dashed: some runs stopped, their last λ1 carried)")
        ax.set_ylabel("top Hessian eigenvalue $\\lambda_1$")
        ax.set_title(title or f"{task}: curvature over training")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=2)
        return ax
    ref = next((g for g in curves if arm_name(g) == reference), None)
    kind = {}
    for t, gs in _panels(groups, panels):
        for g in gs:
            kind.setdefault(g, t.split(" (")[0])
    order = [g for t, gs in _panels(groups, panels) for g in gs if g in curves and g != ref]
    order = list(dict.fromkeys(order)) or ([ref] if ref else [])
    ncols = min(4, len(order))
    nrows = math.ceil(len(order) / ncols)
    # shared y (λ1 compares across panels); each panel's x runs to the end of its arm and the reference, so
    # that an arm stopping at step 200 is not squeezed into the corner of a 3,000-step axis
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols + 0.6, 2.4 * nrows + 1.0), sharey=True,
                             squeeze=False, layout="constrained")
    for ax_, g in zip(axes.flat, order):
        if ref is not None and g != ref:
            rc, _, _ = curves[ref]
            plot_log_curve(ax_, rc, colors[ref], None, band=False, lw=REFERENCE_LW)
        curve, live, n = curves[g]
        _carried_panel(ax_, curve, live, n, colors[g], None)
        label = kind.get(g, "")
        ax_.set_title(f"{g} (n={n})" + (f", {label}" if label and label != "rules" else ""), fontsize=8.5,
                      color=text_color(colors[g]))
        ax_.set_yscale("log")
        ax_.tick_params(labelsize=7)
    for ax_ in list(axes.flat)[len(order):]:
        ax_.set_axis_off()
    readable_log_axis(axes[0, 0], "y")
    for ax_ in axes[:, 0]:
        ax_.set_ylabel("$\\lambda_1$ (log)")
    for ax_ in list(axes.flat)[max(0, len(order) - ncols):len(order)]:
        ax_.set_xlabel("training step", fontsize=8)
    ref_txt = f"thin line: {ref} (reference, n={curves[ref][2]}); " if ref is not None else ""
    fig.suptitle(title or f"{task}: top Hessian eigenvalue over training, geometric mean ×/÷ geometric std over "
                 f"seeds\n{ref_txt}dashed: some runs stopped (their last λ1 carried), numbers: runs still "
                 "training", fontsize=9)
    add_notes(fig, notes)
    return fig


MATCHED_RULES = ("bptt", "eprop", "bptt_scaled")


def matched_groups(groups: dict[str, list[Run]]) -> dict[str, list[Run]]:
    """The groups of Fig. 4C-E: the arms bptt, eprop and every bptt_scaled arm; empty unless a bptt_scaled arm
    and one of the others are present."""
    scaled = {g for g, runs in groups.items() if any(r.rule == "bptt_scaled" for r in runs)}
    sel = {g: runs for g, runs in groups.items() if g in MATCHED_RULES[:2] or g in scaled}
    return sel if scaled and len(sel) > len(scaled) else {}


def draw_matched_step(task: str, groups: dict[str, list[Run]], gap: str) -> plt.Figure | None:
    """Fig. 4C-E: lambda_max trajectories of eprop, bptt and bptt_scaled (labelled with its rho), and their
    final gaps."""
    sel = matched_groups(groups)
    if not sel:
        return None
    colors = group_colors(list(groups))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.0, 3.9), gridspec_kw={"width_ratios": [1.3, 1]},
                                 layout="constrained")
    drawn = draw_lambda_trajectories(task, sel, ax=a1, title="curvature over training", colors=colors)
    if drawn is None:
        a1.text(0.5, 0.5, "no lambda_max history", ha="center", va="center", transform=a1.transAxes)
        a1.set_axis_off()
    values = {g: [r.value(gap) for r in runs if r.value(gap) is not None] for g, runs in sel.items()}
    values = {g: v for g, v in values.items() if v}
    if values:
        a2.axvline(0, color="0.6", lw=0.8, ls="--")
        strip_rows(a2, values, colors)
    a2.set_xlabel(GAP_LABELS[gap])
    a2.set_title("final generalization gap")
    fig.suptitle(f"{task}: step-length-matched BPTT (update × ρ) vs e-prop and BPTT")
    return fig


ALIGN_PANELS = (("rho", "alignment ρ = ĝ·g / g·g", "ρ: step length along the gradient", 1.0),
                ("align_cos", "cos(ĝ, g)", "direction", 1.0),
                ("align_norm_ratio", "|ĝ| / |g|", "norm of the estimate", 1.0))


def draw_rho_theory(task: str, groups: dict[str, list[Run]],
                    stability: dict[str, list[list[tuple[float, float]]]],
                    panels: list[tuple[str, list[str]]] | None = None) -> plt.Figure | None:
    """Alignment over training — ρ, cos and |ĝ|/|g| (each column drawn when some run has that history) — and
    Theorem 1's |ρ|ηλ1 at curvature steps against its bound 1 and plain GD's classical ηλ1 < 2
    (`stability`: {group: [one history per run]}, from analysis.claim_table.stability_points). One row per group
    of arms (`panels`: rules, variants, controls), each row's legend at its right."""
    columns = [(key, ylabel, title, ref, curves_for(groups, key)) for key, ylabel, title, ref in ALIGN_PANELS]
    columns = [c for c in columns if c[4]]
    theory = {g: (mean_curve([h for h in hs if h]), sum(bool(h) for h in hs))
              for g, hs in stability.items() if any(hs)}
    theory = {g: v for g, v in theory.items() if v[0] is not None}
    if not columns and not theory:
        return None
    has = {g for c in columns for g in c[4]} | set(theory)
    rows = [(t, [g for g in gs if g in has]) for t, gs in _panels(groups, panels)]
    rows = [(t, gs) for t, gs in rows if gs]
    colors = group_colors(list(groups))
    n_cols = len(columns) + (1 if theory else 0)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3.1 * n_cols + 2.4, 2.7 * len(rows) + 0.8),
                             sharex=True, squeeze=False, layout="constrained")
    theory_log = bool(theory) and log_curves([c for c, _ in theory.values()])
    for r, (row_title, gs) in enumerate(rows):
        for c, (key, ylabel, title, ref, curves) in enumerate(columns):
            ax = axes[r, c]
            ax.axhline(ref, color="0.6", lw=0.8, ls="--")
            for g in gs:
                if g in curves:
                    curve, n = curves[g]
                    plot_curve(ax, curve, colors[g], f"{g} (n={n})")
            means = np.concatenate([cv.mean for cv, _ in curves.values()])
            if key == "align_norm_ratio" and means.min() > 0 and means.max() / means.min() > 10:
                ax.set_yscale("log")  # noisy rules' |ĝ|/|g| ~ 20 would flatten the others' ~ 0.3
                readable_log_axis(ax, "y")
            ax.set_ylabel(ylabel, fontsize=8)
            if r == 0:
                ax.set_title(title, fontsize=9)
        if theory:
            ax = axes[r, -1]
            ax.axhline(1, color="red", lw=1.0, ls="--", label="Theorem 1 bound 1")
            ax.axhline(2, color="0.3", lw=1.0, ls=":", label="GD's classical bound ηλ1 = 2")
            for g in gs:
                if g in theory:
                    curve, n = theory[g]
                    plot_curve(ax, curve, colors[g], f"{g} (n={n})")
            if theory_log:
                ax.set_yscale("log")
                readable_log_axis(ax, "y")
            ax.set_ylabel("|ρ| η $\\lambda_1$", fontsize=8)
            if r == 0:
                ax.set_title("Theorem 1: stable when below 1", fontsize=9)
        handles = {}
        for ax in axes[r]:
            handles.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels())})
        axes[r, -1].legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           fontsize=7, title=row_title or None, title_fontsize=8, alignment="left")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    fig.suptitle(f"{task}: gradient alignment and Theorem 1 (mean ± std over seeds)")
    return fig


def draw_overview(task: str, groups: dict[str, list[Run]], gap: str, corr: dict[str, Correlation],
                  stability: dict[str, list[list[tuple[float, float]]]] | None = None,
                  arms: list[str] | None = None) -> plt.Figure | None:
    """One figure per task for a slide (the reference's Figs. 2-4 in one): (a) the final gap per arm, (b) λ1
    over training (geometric mean, bands ×/÷ geometric std), (c) final gap against final λ1 with the pooled
    correlation, (d) ρ over training (or |ρ|ηλ1 when no run has a ρ history). `arms`: the groups to show (the
    reference and the rules, from arm_panels' first panel); the colours are those of every other figure."""
    arms = [g for g in (arms or list(groups)) if g in groups]
    sel = {g: groups[g] for g in arms}
    if not sel:
        return None
    colors = group_colors(list(groups))
    values = {g: [r.value(gap) for r in runs if r.value(gap) is not None] for g, runs in sel.items()}
    values = {g: v for g, v in values.items() if v}
    lam = carried_log_curves(sel, "lambda_max")
    rho = curves_for(sel, "rho")
    if not values and not lam:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.2), layout="constrained")
    (a, b), (c, d) = axes
    if values:
        a.axvline(0, color="0.6", lw=0.8, ls="--")
        strip_rows(a, values, colors)
        a.set_xlabel(GAP_LABELS[gap])
    a.set_title("(a) generalization gap at the end (one point per run)", loc="left", fontsize=9)
    bands = len(sel) <= OVERVIEW_BANDS  # more bands than that merge into one smear
    for g, (curve, live, n) in lam.items():
        _carried_panel(b, curve, live, n, colors[g], g, band=bands, counts=False)
    if lam:
        b.set_yscale("log")
        readable_log_axis(b, "y")
    b.set_xlabel("training step")
    b.set_ylabel("$\\lambda_1$ (log)")
    b.set_title("(b) λ1 over training: geometric mean" + (" ×/÷ geometric std" if bands
                                                          else f" (spread: lambda_{task}.png)"), loc="left", fontsize=9)
    pts = {g: [(r.value("lambda_max"), r.value(gap)) for r in runs
               if (r.value("lambda_max") or 0) > 0 and r.value(gap) is not None] for g, runs in sel.items()}
    pts = {g: p for g, p in pts.items() if p}
    if pts:
        limits = robust_log_limits([x for p in pts.values() for x, _ in p])
        lo, hi = limits if limits else (0, math.inf)
        _scatter_gap_lambda(c, pts, colors, lo, hi, None)
        c.set_xscale("log")
        if limits:
            c.set_xlim(lo, hi)
        readable_log_axis(c, "x")
    c.set_xlabel("final $\\lambda_1$ (log)")
    c.set_ylabel(GAP_LABELS[gap], fontsize=8)
    pooled = corr.get("all")
    c.set_title("(c) gap vs curvature" + (f": pooled {fmt_corr(pooled)}" if pooled is not None else ""),
                loc="left", fontsize=8 if pooled is not None else 9)
    if rho:
        d.axhline(1, color="0.6", lw=0.8, ls="--")
        for g, (curve, n) in rho.items():
            plot_curve(d, curve, colors[g], g, band=bands)
        d.set_ylabel("alignment ρ = ĝ·g / g·g")
        d.set_title("(d) ρ over training: mean" + (" ± std" if bands else f" (spread: rho_theory_{task}.png)"),
                    loc="left", fontsize=9)
    elif stability:
        theory = {g: mean_curve([h for h in stability.get(g, []) if h]) for g in sel}
        d.axhline(1, color="red", lw=1.0, ls="--")
        for g, curve in theory.items():
            if curve is not None:
                plot_curve(d, curve, colors[g], g)
        d.set_ylabel("|ρ| η $\\lambda_1$")
        d.set_title("(d) Theorem 1's |ρ|ηλ1 (stable below 1)", loc="left", fontsize=9)
    d.set_xlabel("training step")
    handles = {g: plt.Line2D([], [], color=colors[g], lw=2.5) for g in sel}
    fig.legend(handles.values(), [f"{g} (n={len(sel[g])})" for g in handles], loc="outside lower center",
               ncol=min(len(handles), 6), fontsize=8)
    n_seeds = max(len(runs) for runs in sel.values())
    fig.suptitle(f"{task}: overview, the reference and the rules under test (up to {n_seeds} runs per arm)")
    return fig
