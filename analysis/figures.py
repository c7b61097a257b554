"""The study's figures, drawn from runs already grouped and statistics already computed (analysis.stats).
Each draw_* function returns a matplotlib Figure, or None when there is nothing to draw; save() writes it as
PNG and PDF. Colors follow the reference paper: BPTT black, bio-plausible rules magenta / yellow / green,
step-length-matched BPTT blue."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.claims import collapse  # noqa: E402
from analysis.load import Run  # noqa: E402
from analysis.stats import Correlation, Curve, carried_curve, mean_curve  # noqa: E402

RULE_COLORS = {"bptt": "black", "eprop": "#c51b7d", "rflo": "#e6ab02", "mdgl": "#1b9e77",
               "bptt_scaled": "#2166ac", "tbptt": "#d95f02"}
SPARE_COLORS = ["#7570b3", "#a6761d", "#66a61e", "#e7298a", "#666666", "#17becf", "#8c564b", "#bcbd22"]
GAP_LABELS = {"gap_acc": "generalization gap (train acc − test acc)",
              "gap_loss": "generalization gap (test loss − train loss)"}

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "axes.spines.top": False,
                     "axes.spines.right": False, "legend.frameon": False, "font.size": 9})


def group_colors(groups: list[str]) -> dict[str, str]:
    """A color per group: the rule's own color for the first group of a rule, spare colors after that."""
    colors, used, spare = {}, set(), iter(SPARE_COLORS * 4)
    for g in groups:
        rule = g.split(" ")[0]
        base = RULE_COLORS.get(rule)
        colors[g] = base if base and base not in used else next(spare)
        used.add(colors[g])
    return colors


def save(fig, out_dir: Path, name: str) -> list[str]:
    """Write fig as <name>.png and <name>.pdf in out_dir; return the file names."""
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


def fmt_corr(c: Correlation, sep: str = ", ") -> str:
    """"Pearson r (p), Spearman r_s (p)" for a legend or title; Spearman is r_s, never rho (rho is alignment)."""
    if math.isnan(c.pearson_r):
        return "r n/a"
    return f"r={c.pearson_r:.2f} (p={c.pearson_p:.2g}){sep}r$_s$={c.spearman_r:.2f} (p={c.spearman_p:.2g})"


def strip_box(ax, groups: dict[str, list[float]], colors: dict[str, str], seed: int = 0) -> None:
    """Box (quartiles, whiskers 1.5 IQR) plus every run as a jittered point, one column per group."""
    rng = np.random.default_rng(seed)  # fixed jitter: the same data always draws the same figure
    names = list(groups)
    for i, g in enumerate(names):
        v = np.asarray(groups[g], dtype=float)
        if len(v) == 0:
            continue
        ax.boxplot(v, positions=[i], widths=0.5, showfliers=False, patch_artist=True,
                   boxprops=dict(facecolor=colors[g], alpha=0.15, edgecolor=colors[g]),
                   medianprops=dict(color=colors[g]), whiskerprops=dict(color=colors[g]),
                   capprops=dict(color=colors[g]))
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=18, color=colors[g], zorder=3,
                   edgecolor="white", linewidth=0.5)
    # the group's parameters on their own line, so that long labels (bptt_scaled (rho=0.1)) do not collide
    ax.set_xticks(range(len(names)), [g.replace(" (", "\n(") + f"\nn={len(groups[g])}" for g in names])
    ax.set_xlim(-0.6, len(names) - 0.4)


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


def draw_gap_distribution(task: str, groups: dict[str, list[Run]], gap: str,
                          notes: list[str] | None = None) -> plt.Figure | None:
    """Fig. 2A-C: final generalization gap over seeds, per group; notes name the arms' runs that did not end
    ok."""
    values = {g: [r.value(gap) for r in runs if r.value(gap) is not None] for g, runs in groups.items()}
    values = {g: v for g, v in values.items() if v}
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(max(3.2, 1.1 * len(values) + 1.2), 3.4))
    ax.axhline(0, color="0.7", lw=0.8, ls="--")
    strip_box(ax, values, group_colors(list(groups)))
    ax.set_ylabel(GAP_LABELS[gap])
    ax.set_title(f"{task}: generalization gap at the end of training")
    fig.tight_layout()
    add_notes(fig, notes)
    return fig


def draw_gap_vs_lambda(task: str, groups: dict[str, list[Run]], gap: str, corr: dict[str, Correlation],
                       pooled: list[str] | None = None) -> plt.Figure | None:
    """Fig. 2D-F: final gap against final lambda_max (robust log axis: points beyond robust_log_limits drawn
    as triangles at the edge; runs with lambda_max <= 0 cannot be drawn there and are left out, as from the
    correlations), one point per run, with r over the pooled arms (the same set as the report's table) and
    per group."""
    pts = {g: [(r.value("lambda_max"), r.value(gap)) for r in runs
               if (r.value("lambda_max") or 0) > 0 and r.value(gap) is not None] for g, runs in groups.items()}
    pts = {g: p for g, p in pts.items() if p}
    if not pts:
        return None
    colors = group_colors(list(groups))
    fig, ax = plt.subplots(figsize=(7.5 + (3.0 if len(pts) > 8 else 0), max(4.0, 0.3 * len(pts) + 1.5)))
    limits = robust_log_limits([x for p in pts.values() for x, _ in p])
    lo, hi = limits if limits else (0, math.inf)
    n_clipped = 0
    for g, p in pts.items():
        x, y = np.array(p).T
        inside = (x >= lo) & (x <= hi)
        ax.scatter(x[inside], y[inside], s=24, color=colors[g], edgecolor="white", linewidth=0.5, zorder=3,
                   label=f"{g} (n={len(p)})\n" + fmt_corr(corr[g]))
        if (~inside).any():  # drawn at the axis edge, pointing to where they lie
            n_clipped += int((~inside).sum())
            for xv, yv in zip(x[~inside], y[~inside]):
                ax.scatter([lo if xv < lo else hi], [yv], marker="<" if xv < lo else ">", s=40, color=colors[g],
                           zorder=4, clip_on=False)
    fell = [(r.value("lambda_max"), r.value(gap)) for runs in groups.values() for r in runs
            if (r.value("lambda_max") or 0) > 0 and r.value(gap) is not None and collapse(r)]
    if fell:  # collapsed runs stay in the statistics; ringed so that a reader sees them
        x, y = np.array(fell).T
        ax.scatter(x, y, s=90, facecolor="none", edgecolor="red", linewidth=1.0, zorder=4,
                   label=f"collapsed run (n={len(fell)})")
    ax.set_xscale("log")
    if limits:
        ax.set_xlim(lo, hi)
    ax.set_xlabel("final top Hessian eigenvalue $\\lambda_1$ (log)"
                  + (f"; {n_clipped} run(s) beyond the axis drawn as triangles at its edge" if n_clipped else ""))
    ax.set_ylabel(GAP_LABELS[gap])
    what = (f"pooled {len(pooled)} arms (reference + rules, no controls)" if pooled is not None else "all runs")
    ax.set_title(f"{task}: gap vs curvature — {what}, {corr['all'].n} runs:\nPearson (log $\\lambda_1$) "
                 + fmt_corr(corr["all"]).replace("r$_s$", "Spearman r$_s$"),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), labelspacing=0.6,
              ncol=2 if len(pts) > 8 else 1)
    fig.tight_layout()
    return fig


def plot_curve(ax, curve: Curve, color: str, label: str) -> None:
    ax.plot(curve.steps, curve.mean, color=color, lw=1.5, label=label,
            marker="o" if len(curve.steps) < 4 else None, ms=3)
    ax.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std, color=color, alpha=0.18, lw=0)


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


def plot_log_curve(ax, curve: Curve, color: str, label: str) -> None:
    """A curve of log values drawn on a log axis: geometric mean, band ×/÷ the geometric std."""
    ax.plot(curve.steps, np.exp(curve.mean), color=color, lw=1.5, label=label,
            marker="o" if len(curve.steps) < 4 else None, ms=3)
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


def draw_lambda_trajectories(task: str, groups: dict[str, list[Run]], ax=None, title: str | None = None,
                             colors: dict[str, str] | None = None, notes: list[str] | None = None):
    """Fig. 3: lambda_max over training on a log axis, geometric mean ×/÷ geometric std over seeds per group
    (positive values only), each run's last value carried forward after it stopped (no survivor bias: the
    mean at a late step is not that of the slow runs alone); the line is solid while every run is still
    measured, dashed once some are carried, with the number still measured written at those steps. Returns
    the figure (None when no run has a positive lambda_max history); with `ax`, draws into it and returns it."""
    curves = carried_log_curves(groups, "lambda_max")
    if not curves:
        return None
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
    colors = colors or group_colors(list(groups))
    for g, (curve, live, n) in curves.items():
        plot_log_curve(ax, curve, colors[g], f"{g} (n={n})")
        carried = live < n
        if carried.any():  # from the first step where a run is carried: dashed, with n still measured
            k = int(np.argmax(carried))
            ax.plot(curve.steps[k:], np.exp(curve.mean[k:]), color="white", lw=1.0, ls=(0, (2, 2)))
            for i in range(k, len(curve.steps)):
                if i == k or live[i] != live[i - 1]:
                    ax.annotate(str(int(live[i])), (curve.steps[i], np.exp(curve.mean[i])), fontsize=6,
                                color=colors[g], textcoords="offset points", xytext=(2, 3))
    ax.set_yscale("log")
    ax.set_xlabel("training step (numbers: runs still training; dashed: stopped runs' last λ1 carried)")
    ax.set_ylabel("top Hessian eigenvalue $\\lambda_1$ (log)")
    ax.set_title(title or f"{task}: curvature over training (geometric mean ×/÷ geometric std over seeds)")
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
        add_notes(fig, notes)
    return fig if fig is not None else ax


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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    drawn = draw_lambda_trajectories(task, sel, ax=a1, title="curvature over training", colors=colors)
    if drawn is None:
        a1.text(0.5, 0.5, "no lambda_max history", ha="center", va="center", transform=a1.transAxes)
        a1.set_axis_off()
    values = {g: [r.value(gap) for r in runs if r.value(gap) is not None] for g, runs in sel.items()}
    values = {g: v for g, v in values.items() if v}
    if values:
        a2.axhline(0, color="0.7", lw=0.8, ls="--")
        strip_box(a2, values, colors)
        a2.tick_params(axis="x", labelsize=7)
    a2.set_ylabel(GAP_LABELS[gap])
    a2.set_title("final generalization gap")
    fig.suptitle(f"{task}: step-length-matched BPTT (update × ρ) vs e-prop and BPTT")
    fig.tight_layout()
    return fig


ALIGN_PANELS = (("rho", "alignment ρ = ĝ·g / g·g", "step length along the gradient", 1.0),
                ("align_cos", "cos(ĝ, g)", "direction", 1.0),
                ("align_norm_ratio", "|ĝ| / |g|", "norm of the estimate", 1.0))


def draw_rho_theory(task: str, groups: dict[str, list[Run]],
                    stability: dict[str, list[list[tuple[float, float]]]]) -> plt.Figure | None:
    """Alignment over training per group — ρ, cos and |ĝ|/|g| (each panel drawn when some run has that
    history) — and Theorem 1's |ρ|ηλ1 at curvature steps against its bound 1 and plain GD's classical ηλ1 < 2
    (`stability`: {group: [one history per run]}, from analysis.claims.stability_points)."""
    panels = [(key, ylabel, title, ref, curves_for(groups, key)) for key, ylabel, title, ref in ALIGN_PANELS]
    panels = [p for p in panels if p[4]]
    theory = {g: (mean_curve([h for h in hs if h]), sum(bool(h) for h in hs))
              for g, hs in stability.items() if any(hs)}
    if not panels and not theory:
        return None
    colors = group_colors(list(groups))
    n_axes = len(panels) + (1 if theory else 0)
    fig, axes = plt.subplots(1, n_axes, figsize=(3.6 * n_axes + 0.5, 4.0), layout="constrained", squeeze=False)
    axes = list(axes[0])
    for ax, (key, ylabel, title, ref, curves) in zip(axes, panels):
        ax.axhline(ref, color="0.6", lw=0.8, ls="--")
        for g, (curve, n) in curves.items():
            plot_curve(ax, curve, colors[g], f"{g} (n={n})")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    if theory:
        a2 = axes[-1]
        a2.axhline(1, color="red", lw=1.0, ls="--", label="Theorem 1 bound 1")
        a2.axhline(2, color="0.3", lw=1.0, ls=":", label="GD's classical bound ηλ1 = 2")
        for g, (curve, n) in theory.items():
            plot_curve(a2, curve, colors[g], f"{g} (n={n})")
        if log_curves([c for c, _ in theory.values()]):
            a2.set_yscale("log")
        a2.set_xlabel("training step")
        a2.set_ylabel("|ρ| η $\\lambda_1$ (at curvature steps)")
        a2.set_title("Theorem 1: stable when below 1")
    fig.suptitle(f"{task}: gradient alignment and Theorem 1")
    # one legend below the panels: the groups are the same, and inside a panel it hides curves
    handles = {}
    for ax in axes:
        handles.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels())})
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 4),
               fontsize=8)
    return fig
