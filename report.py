"""The study's figures, statistics and claims from a sweep's run records:

    python report.py <sweep dir> [<more dirs> ...] [--also <dir>] --out <dir> [--plan plan.yaml]
                     [--wandb entity/project] [--no-figures]

Reads every summary.json below the directories (SPEC section 6). Runs are grouped per task into *arms*
(analysis.claim_table.arm_of: the record's study arm, else the rule plus bptt_scaled's ρ mode, tbptt's window, an
early stop on test accuracy, an lr scheduler). The claims follow the analysis plan (--plan, default
docs/study/plan.yaml; analysis.plan): primary claims, the "any rule" template for every other rule, paired
tests, Holm within families, TOST, bootstrap CIs, the smallest detectable effect. Writes into --out, per task:
  gap_<task>            final generalization gap per arm over seeds (reference Fig. 2A-C)
  gap_vs_lambda_<task>  final gap vs final λ1 (robust log axis), one point per run, r over the pooled arms
  lambda_<task>         λ1 over training (log axis), each run's last value carried forward, n per point
  matched_step_<task>   bptt vs eprop vs bptt_scaled arms: λ1 and gaps (Fig. 4C-E)
  rho_theory_<task>     ρ, cos and |ĝ|/|g| over training, and Theorem 1's |ρ|ηλ1 against 1 and 2
each as PNG and PDF, and report.md: status counts per arm (collapsed runs flagged), a per-arm table, the claims
table, its plain-words summary (analysis.prose), correlations, Theorem 1, the figure list and the excluded
and unreadable records. With several tasks, report.md starts with a claim × task table of verdicts.
The gap is gap_acc (train - test accuracy) for classification tasks, gap_loss (test - train loss) where a
task has no accuracy. Statistics use the runs with status "ok" (collapsed ones included, and listed).
report.md depends only on the records and the directory names given: the same records give the same bytes.
Exit status: 0 written, 2 no records / no such directory / --out not writable / a bad plan, 1 an unexpected
error.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path

from analysis import claim_table as cl
from analysis import dose_response, figures, learning, markdown, prose, toy
from analysis.load import Run, by_task_group, find_summaries, read_run
from analysis.plan import DEFAULT_PLAN, Plan, PlanError, load_plan, provenance
from analysis.stats import describe, gap_key, gap_lambda_correlations
from analysis.verdict import HEADER as CLAIM_HEADER

FIGURE_NOTES = {
    "overview": "one figure for a slide: gap per arm, λ1 over training, gap vs λ1, ρ over training, for the "
                "reference and the rules under test (Figs. 2-4 in one)",
    "gap": "generalization gap at the end of training per arm, rules and controls in separate panels (Fig. 2A-C)",
    "gap_vs_lambda": "final gap vs final λ1 (log axis clipped to the data's bulk, clipped points drawn as "
                     "triangles at the edge), one point per run, r over the pooled arms (Fig. 2D-F)",
    "lambda": "λ1 over training (log axis), one panel per arm with the reference in grey, geometric mean ×/÷ "
              "geometric std over seeds, each run's last value carried forward after it stopped; n still "
              "training marked (Fig. 3)",
    "matched_step": "bptt vs eprop vs step-matched bptt_scaled: λ1 over training and final gaps (Fig. 4C-E)",
    "rho_theory": "ρ, cos and |ĝ|/|g| over training; Theorem 1's |ρ|ηλ1 at curvature steps against 1 and 2",
    "dose_response": "λ1 at the matched point against 2/(|ρ̄|η), log axes, identity line and OLS fit (Theorem 1)",
}
STATUSES = ("ok", "collapsed", "diverged", "failed", "interrupted")
NUMBER_FIELDS = ("steps", "lr", "train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss",
                 "lambda_max", "rho_mean", "stopped_at", "seed")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", help="sweep directories searched recursively for summary.json")
    p.add_argument("--also", action="append", default=[], metavar="DIR", help="another directory to merge in")
    p.add_argument("--out", required=True, help="directory for the figures and report.md")
    p.add_argument("--plan", default=str(DEFAULT_PLAN), help="the analysis plan (default docs/study/plan.yaml)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also pull the runs of a wandb project")
    p.add_argument("--no-figures", action="store_true",
                   help="write report.md only (quick; figures listed as not drawn)")
    return p.parse_args(argv)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------------------- validation
def malformed(summary: dict) -> str | None:
    """Why a parsed summary.json cannot be used (a field of the wrong type), or None."""
    for key in ("status", "rule", "task"):
        if summary.get(key) is not None and not isinstance(summary[key], str):
            return f"field {key!r} is {type(summary[key]).__name__}, not a string"
    for key in NUMBER_FIELDS:
        v = summary.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"field {key!r} is {type(v).__name__}, not a number"
    for key in ("config", "history", "stop_target"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            return f"field {key!r} is {type(summary[key]).__name__}, not an object"
    for key, points in (summary.get("history") or {}).items():
        if points is not None and not isinstance(points, list):
            return f"history[{key!r}] is {type(points).__name__}, not a list of [step, value]"
    if summary.get("warnings") is not None and not isinstance(summary["warnings"], list):
        return "field 'warnings' is not a list"
    return None


def check(run: Run) -> Run:
    """The run, or an "unreadable" run with the reason when its fields have the wrong types."""
    if run.status == "unreadable":
        return run
    why = malformed(run.summary)
    if why:
        return Run(path=run.path, summary={}, status="unreadable", error=why)
    return run


# ------------------------------------------------------------------------------------------- paths
def source_label(d: str) -> str:
    """A source directory as report.md shows it: relative to the working directory when below it, else its
    own name (never an absolute path, which would change with where the records lie)."""
    if str(d).startswith("wandb:"):
        return str(d)
    rel = os.path.relpath(Path(d).resolve())
    return rel if not rel.startswith("..") else Path(d).resolve().name


def display_path(path: str, sources: list[str]) -> str:
    """A record's path relative to the source directory it was found under, prefixed by that source's label."""
    p = Path(path)
    for d in sources:
        if d.startswith("wandb:"):
            continue
        root = Path(d).resolve()
        try:
            rel = p.resolve().relative_to(root if root.is_dir() else root.parent)
        except (ValueError, OSError):
            continue
        return f"{source_label(d)}/{rel.as_posix()}"
    return path if path.startswith("wandb:") else p.name


# ---------------------------------------------------------------------------------------- sections
STOP_KEYS = ("stop_at_train_acc", "stop_at_test_acc", "stop_at_train_loss")


def stop_cell(runs: list[Run]) -> str:
    """"reached/with a target" over the runs with a stop target (the record's stop_target, or a number in
    config.stop_at_*); a record without the stopped_at field counts as unknown; "—" when no run has a target."""
    with_target = [r for r in runs if isinstance(r.summary.get("stop_target"), dict)
                   or any(cl.number(r.config(k)) is not None for k in STOP_KEYS)]
    if not with_target:
        return "—"
    unknown = sum("stopped_at" not in r.summary for r in with_target)
    reached = sum(cl.number(r.summary.get("stopped_at")) is not None for r in with_target)
    return f"{reached}/{len(with_target)}" + (f" ({unknown} unknown: no stopped_at)" if unknown else "")


def seed_text(run: Run) -> str:
    seed = cl.number(run.seed)
    return "n/a" if seed is None else str(int(seed)) if seed.is_integer() else f"{seed:g}"


def final_value(run: Run, key: str) -> float | None:
    """The record's final scalar, else the last point of its history (e.g. shift_acc)."""
    v = run.value(key)
    if v is None and run.history(key):
        v = run.history(key)[-1][1]
    return v


def overshoot(run: Run) -> float | None:
    """How far past its target the run's stop score is (>= 0 in the score's units): the record's
    `stop_overshoot`, or for a record made before that field, its final training (or test) score against the
    target it stopped at (the final evaluation is at the stop step). None without a reached target."""
    value = run.value("stop_overshoot")
    target = run.summary.get("stop_target")
    if value is not None or not isinstance(target, dict) or run.value("stopped_at") is None:
        return value
    split, _, score = str(target.get("metric", "")).partition("/")
    final, goal = run.value(f"{split}_{score}"), cl.number(target.get("target"))
    if final is None or goal is None:
        return None
    return goal - final if score == "loss" else final - goal


def overshoot_cell(runs: list[Run]) -> str:
    """Mean ± std of how far past its target each run stopped (see overshoot), and in how many runs the step
    before the stop was checked and below (`stop_exact`; "sparse checks" for records made before it)."""
    values = [v for v in map(overshoot, runs) if v is not None]
    if not values:
        return "—"
    known = [r for r in runs if "stop_exact" in r.summary and overshoot(r) is not None]
    exact = sum(r.summary.get("stop_exact") is True for r in known)
    how = f"{exact}/{len(known)} exact" if known else "sparse checks"
    return f"{markdown.stat_cell(describe(values), len(values))} ({how})"


def arm_table(groups: dict[str, list[Run]], gap: str, plan: Plan, task: str,
              everyone: dict[str, list[Run]] | None = None) -> tuple[list[str], list[list[str]]]:
    perf = ["train_acc", "test_acc"] if gap == "gap_acc" else ["train_loss", "test_loss"]
    shift = "shift_acc" if gap == "gap_acc" else "shift_loss"  # the shifted test set, when runs measured it
    if any(final_value(r, shift) is not None for rs in groups.values() for r in rs):
        perf.append(shift)
    header = (["arm", "n ok"] + perf + ["learned (all runs)", gap, "final λ1", "mean ρ", "mean |ĝ|/|g|", "steps",
                                       "reached stop target (all runs)", "overshoot"])
    everyone = everyone or groups
    chance = plan.chance(task)
    rows = []
    for g, rs in groups.items():
        n = len(rs)
        cells = [markdown.stat_cell(describe([final_value(r, c) for r in rs]), n) for c in perf]
        n_learned, n_known = learning.learned_count(everyone.get(g, rs), chance, plan.margin(task))
        cells.append(f"{n_learned}/{n_known}" if n_known else "n/a")
        cells += [markdown.stat_cell(describe([final_value(r, c) for r in rs]), n)
                  for c in [gap, "lambda_max", "rho_mean"]]
        cells.append(markdown.stat_cell(describe([cl.history_mean(r, "align_norm_ratio") for r in rs]), n))
        cells.append(markdown.stat_cell(describe([r.value("steps") for r in rs]), n))
        rows.append([g, str(n)] + cells + [stop_cell(everyone.get(g, rs)), overshoot_cell(rs)])
    return header, rows


def status_rows(runs: list[Run]) -> list[list[str]]:
    """Per arm (all readable runs of a task): counts of ok (not collapsed), collapsed, diverged, failed,
    interrupted and any other status."""
    groups = by_task_group(runs)
    rows = []
    for _, arms in groups.items():
        for g, rs in arms.items():
            counts = dict.fromkeys(STATUSES, 0)
            other = 0
            for r in rs:
                if r.ok:
                    counts["collapsed" if cl.collapse(r) else "ok"] += 1
                elif r.status in counts:
                    counts[r.status] += 1
                else:
                    other += 1
            rows.append([g, str(len(rs))] + [str(counts[s]) for s in STATUSES] + [str(other)])
    return rows


def diverged_notes(all_in_task: list[Run]) -> list[str]:
    """"rflo: 10 of 10 diverged" for every arm with runs that did not end ok (failed, diverged, ...)."""
    notes = []
    for _, arms in by_task_group(all_in_task).items():
        for g, rs in arms.items():
            bad = count_by([r for r in rs if not r.ok])
            notes += [f"{g}: {n} of {len(rs)} {status}" for status, n in sorted(bad.items())]
    return notes


def task_section(task: str, groups: dict[str, list[Run]], all_in_task: list[Run], out: Path,
                 sources: list[str], plan: Plan, draw: bool = True) -> tuple[list[str], list[str], list[cl.Claim]]:
    """Statistics, claims and figures of one task: (report.md lines, figure files written, claims)."""
    runs = [r for rs in groups.values() for r in rs]
    gap = gap_key(runs)
    lines = [f"## Task `{task}`", "",
             f"Gap: `{gap}` = " + ("train_acc − test_acc." if gap == "gap_acc" else "test_loss − train_loss "
                                   "(the task has no accuracy)."), ""]
    lines += ["### Runs per arm", "",
              "Collapsed: an ok run whose final train accuracy is more than "
              f"{cl.COLLAPSE_ACC_DROP:g} below its best along the run (regression: final train loss above "
              f"{cl.COLLAPSE_LOSS_RATIO:g} × its best). Collapsed runs are kept in every statistic below and "
              "listed here.", "",
              markdown.table(["arm", "runs"] + list(STATUSES) + ["other"], status_rows(all_in_task)), ""]
    collapsed = [(r, cl.collapse(r)) for r in runs if cl.collapse(r)]
    if collapsed:
        lines += markdown.table(["arm", "seed", "why", "path"],
                                [[r.group, seed_text(r), why, display_path(r.path, sources)]
                                 for r, why in collapsed]).splitlines() + [""]

    everyone = by_task_group(all_in_task).get(task, {})  # every run of each arm, whatever its status
    header, rows = arm_table(groups, gap, plan, task, everyone)
    lines += ["### Per arm (ok runs; mean ± std over seeds, std with ddof=1, 0 for a single run)", "",
              "Final λ1 is the record's `lambda_max`; shift_acc / shift_loss (when measured): the shifted test set; "
              "mean |ĝ|/|g| averages the `align_norm_ratio` history; learned (all runs): runs that ended ok, "
              "reached their stop target and score (accuracy; 1 − test_nmse for regression) above chance "
              f"{fmt_chance(plan.chance(task))} + {plan.margin(task):g} / every run of the arm with an answer "
              "(diverged, failed and capped runs count as not learned); steps "
              "differ between arms when runs stop at a target; reached stop target (all runs): runs with "
              "`stopped_at` / runs with a `stop_target` (— when none has one); overshoot: how far past the "
              "target the stop's score is (`stop_overshoot`; for records made before it, the final training "
              "score minus the target), and in how many runs the step before the stop was checked and below "
              "(`stop_exact`; “sparse checks”: the record predates the exact stop and was checked every "
              "`stop_check_every` steps).", "",
              markdown.table(header, rows), ""]
    lam_last = [r for r in runs if r.history("lambda_max")]
    off = [r for r in lam_last if r.history("lambda_max")[-1][0] != r.value("steps")]
    if lam_last:
        lines += [f"Same step: {len(lam_last) - len(off)}/{len(lam_last)} runs with a λ1 history have their last "
                  "λ1 measured at their last step (`steps`), where the final gap is measured"
                  + (f"; the others' final λ1 predates their final gap: "
                     + ", ".join(f"{r.group} seed {seed_text(r)}" for r in off) if off else "")
                  + ".", ""]

    claims = cl.task_claims(task, groups, gap, plan, everyone)
    n_primary = sum(c.primary for c in claims)
    lines += ["### Claims", "",
              f"{n_primary} primary claims (the plan's for `{task}`), then exploratory ones; Theorem 1 rows are "
              "descriptive counts.", "",
              markdown.table(CLAIM_HEADER, [c.row() for c in claims]), ""]
    lines += [f"- {line}" for line in cl.criteria(plan)] + [""]
    lines += ["### In plain words (generated from the primary rows above)", ""]
    lines += [f"- {s}" for s in prose.summary(claims)] or ["(no primary claim)"]
    lines += [""]
    if collapsed:
        kept = {g: [r for r in rs if not cl.collapse(r)] for g, rs in groups.items()}
        changes = cl.verdict_changes(claims, cl.task_claims(task, kept, gap, plan))
        lines += [f"Without the {len(collapsed)} collapsed run(s): "
                  + ("no verdict changes." if not changes else "these verdicts change: " + "; ".join(changes) + "."),
                  ""]

    pooled = plan.pooled(list(groups))
    corr = gap_lambda_correlations(groups, gap, pooled)
    lines += [f"### `{gap}` vs final λ1: correlation", ""]
    if corr["all"].n == 0:
        lines += [f"No ok run of this task has both `{gap}` and a positive `lambda_max`: no correlation.", ""]
    else:
        lines += [f"Pooled: the arms {', '.join(pooled) or '(none)'} (the plan's reference and the rules under "
                  "test, not the controls), in this table and in the gap-vs-λ1 figure alike.", "",
                  "One pair per ok run with both values; Pearson r on (log λ1, gap), Spearman r on (λ1, gap) "
                  "(rank-based, the same on log λ1); p two-sided from scipy.stats.pearsonr / spearmanr "
                  "(asymptotic: rough for a handful of runs); n/a with fewer than 3 runs or a constant variable; "
                  "runs with λ1 ≤ 0 left out.", "",
                  markdown.correlation_table(corr), ""]

    theory_rows = []
    for g, rs in groups.items():
        finals = [v for v in (cl.final_stability(r) for r in rs) if v is not None]
        points = [v for r in rs for _, v in cl.stability_points(r)]
        if finals:
            theory_rows.append([g, f"{len(finals)}/{len(rs)}", markdown.stat_cell(describe(finals), len(finals)),
                                f"{sum(v < 1 for v in finals)}/{len(finals)}",
                                f"{sum(v < 2 for v in finals)}/{len(finals)}",
                                f"{sum(v < 1 for v in points)}/{len(points)}",
                                f"{sum(v < 2 for v in points)}/{len(points)}"])
        else:
            theory_rows.append([g, f"0/{len(rs)}", "n/a", "n/a", "n/a", "n/a", "n/a"])
    lines += ["### Theorem 1: |ρ|ηλ1 (stable fixed point below 1; plain GD's classical ηλ1 bound is 2)", "",
              "The run's recorded `theory_stability` at curvature steps only (that step's λ1, the mean ρ since "
              "the previous curvature step, the step's learning rate); the final value is its last such point; "
              "n/a when a run has none (never recombined from λ1 and ρ of different steps).", "",
              markdown.table(["arm", "runs with a value", "final value", "final < 1", "final < 2",
                              "curvature steps < 1", "curvature steps < 2"], theory_rows), ""]

    chance, margin = plan.chance(task), plan.margin(task)
    dose_lines, dose_files = dose_response.section(
        task, runs, out, draw, f"dose_response_{slug(task)}",
        gate=lambda r: learning.learned(r, chance, margin) is not False and not cl.collapse(r))
    lines += dose_lines  # Theorem 1's dose-response (issue 23): only when runs vary 2/(|rho| eta)

    warned: dict[str, int] = {}
    for r in runs:
        for w in r.summary.get("warnings") or []:
            key = f"{r.group}: {w}"
            warned[key] = warned.get(key, 0) + 1
    if warned:
        lines += ["### Run warnings", ""] + [f"- {markdown.cell(k)} ({n} run{'s' if n > 1 else ''})"
                                             for k, n in sorted(warned.items())] + [""]

    if not draw:
        return lines, [], claims
    stability = {g: [cl.stability_points(r) for r in rs] for g, rs in groups.items()}
    notes = diverged_notes(all_in_task)
    panels = figures.arm_panels(list(groups), plan.reference, plan.is_control)  # rules and controls apart
    drawn = {  # drawn one at a time below: a figure that fails (extreme values) is skipped with the reason
        "overview": (lambda: figures.draw_overview(task, groups, gap, corr, stability, panels[0][1]),
                     f"no ok run has `{gap}` or a `lambda_max` history"),
        "gap": (lambda: figures.draw_gap_distribution(task, groups, gap, notes, panels), f"no ok run has `{gap}`"),
        "gap_vs_lambda": (lambda: figures.draw_gap_vs_lambda(task, groups, gap, corr, pooled, panels),
                          f"no ok run has both a positive `lambda_max` and `{gap}`"),
        "lambda": (lambda: figures.draw_lambda_trajectories(task, groups, notes=notes, panels=panels,
                                                            reference=plan.reference),
                   "no ok run has a positive `lambda_max` history"),
        "matched_step": (lambda: figures.draw_matched_step(task, groups, gap),
                         "needs a bptt_scaled arm and bptt or eprop in this task"),
        "rho_theory": (lambda: figures.draw_rho_theory(task, groups, stability, panels),
                       "no ok run has a `rho`, `align_cos`, `norm_ratio` or `theory_stability` history"),
    }
    files, skipped = list(dose_files), []
    toy_sized = toy.toy_sized(runs)  # a red banner on every figure of smoke-size runs
    for kind, (draw_fig, why) in drawn.items():
        try:
            fig = draw_fig()
            if fig is not None:
                files += figures.save(fig, out, f"{kind}_{slug(task)}", toy=toy_sized)
        except (ArithmeticError, ValueError) as err:  # e.g. values too large for the axis
            figures.close_all()
            fig, why = None, f"could not be drawn: {type(err).__name__}: {err}"
        if fig is None:
            skipped.append(f"- `{kind}_{slug(task)}` skipped: {why}.")
    if skipped:
        lines += ["### Figures skipped", ""] + skipped + [""]
    return lines, files, claims


def fmt_chance(chance: float | None) -> str:
    return "unknown" if chance is None else f"{chance:g}"


def plan_lines(plan: Plan, runs: list[Run]) -> list[str]:
    """Where the analysis plan comes from, and whether it was committed before the runs' code."""
    commits = {str(c) for r in runs if isinstance(r.summary.get("versions"), dict)
               for c in [r.summary["versions"].get("rulescape")] if isinstance(c, str) and c}
    prov = provenance(plan.path, commits)
    where = f"Analysis plan: `{source_label(plan.path)}` (sha256 {prov['sha256']}), "
    if prov["commit"] is None:
        return [where + "not committed: the plan's commit is unknown, so nothing here is pre-registered.", ""]
    where += f"last changed in commit `{prov['commit'][:12]}`" + (" (with uncommitted changes)" if prov["dirty"]
                                                                   else "")
    runs_c = ", ".join(f"`{c[:7]}`" for c in sorted(commits)) or "none recorded"
    if prov["preregistered"] is True:
        tail = f"; pre-registered: that commit precedes the runs' code commit(s) {runs_c}."
    elif prov["preregistered"] is False:
        tail = (f"; post hoc: that commit does not precede the runs' code commit(s) {runs_c}, so the plan was "
                "written after (or apart from) these runs.")
        if prov.get("primary_unchanged"):
            tail += (" Its primary claims are the ones the plan named at those commits (unchanged); what changed "
                     "after the runs (gates, claim kinds, exploratory claims) is post hoc.")
    else:
        tail = f"; whether it precedes the runs' code ({runs_c}) is unknown."
    return [where + tail, ""]


def build_report(runs: list[Run], out: Path, sources: list[str], draw: bool = True,
                 plan: Plan | None = None) -> Path:
    """Write the figures and report.md for these runs into out; return the report's path."""
    plan = plan or load_plan()
    out.mkdir(parents=True, exist_ok=True)
    unreadable = [r for r in runs if r.status == "unreadable"]
    readable = [r for r in runs if r.status != "unreadable"]
    cl.assign_arms(readable)
    ok = [r for r in readable if r.ok]
    excluded = [r for r in readable if not r.ok]
    n_collapsed = sum(bool(cl.collapse(r)) for r in ok)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(count_by(excluded).items()))
    lines = ["# rulescape report", "", "Sources: " + ", ".join(f"`{source_label(s)}`" for s in sources), "",
             f"{len(runs)} run records: {len(ok)} ok ({n_collapsed} of them collapsed), {len(excluded)} excluded"
             + (f" ({counts})" if counts else "") + f", {len(unreadable)} unreadable. Statistics and figures use "
             "the ok runs, collapsed ones included; the excluded and unreadable records are listed at the end.", ""]
    if toy.toy_sized(readable):
        lines[1:1] = ["", toy.BANNER]
    lines += plan_lines(plan, readable)
    files, all_claims, sections = [], [], []
    for task, groups in by_task_group(ok).items():
        section, task_files, claims = task_section(task, groups, [r for r in readable if r.task == task], out,
                                                   sources, plan, draw)
        sections += section
        files += task_files
        all_claims += claims
    tasks = sorted({c.task for c in all_claims})
    if len(tasks) > 1:
        header, rows = cl.claims_matrix(all_claims)
        lines += ["## Claims across tasks", "", "Verdicts only; statistics, p and n in each task's claims table.", "",
                  markdown.table(header, rows), ""]
    lines += sections
    lines += ["## Figures", ""]
    stems = list(dict.fromkeys(f.rsplit(".", 1)[0] for f in files))
    lines += [f"- `{s}.png`, `{s}.pdf` — {describe_figure(s)}" for s in stems] or [
        "(none)" if draw else "(not drawn: --no-figures)"]
    lines += ["", f"## Excluded runs ({len(excluded)})", ""]
    lines += [markdown.table(["arm", "task", "seed", "status", "error", "path"],
                             [[r.group, r.task, seed_text(r), r.status, r.error or "",
                               display_path(r.path, sources)] for r in excluded])
              if excluded else "None: every readable run record has status ok.", ""]
    if unreadable:
        lines += [f"## Unreadable records ({len(unreadable)})", "",
                  markdown.table(["path", "reason"], [[display_path(r.path, sources), r.error or ""]
                                                      for r in unreadable]), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def describe_figure(name: str) -> str:
    for kind in sorted(FIGURE_NOTES, key=len, reverse=True):  # gap_vs_lambda before gap
        if name.startswith(kind + "_"):
            return FIGURE_NOTES[kind]
    return ""


def count_by(runs: list[Run]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def writable(out: Path) -> str | None:
    """Why report.md cannot be written into out, or None."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create --out {out}: {err.strerror or err}"
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        return f"--out {out} is not a writable directory"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dirs = list(args.dirs) + list(args.also)
    if not dirs and not args.wandb:
        print("error: give at least one sweep directory (or --wandb entity/project)", file=sys.stderr)
        return 2
    try:
        runs = [check(read_run(p)) for p in find_summaries(dirs)]
    except (FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.wandb:
        from analysis.wandb_source import runs_from_wandb
        runs += [check(r) for r in runs_from_wandb(args.wandb)]
    if not runs:
        print(f"error: no summary.json found under {', '.join(dirs)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    why = writable(out)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    sources = dirs + ([f"wandb:{args.wandb}"] if args.wandb else [])
    try:
        plan = load_plan(args.plan)
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # numpy's overflow warnings on extreme records: the report says n/a
            warnings.simplefilter("ignore", RuntimeWarning)
            path = build_report(runs, out, sources, draw=not args.no_figures, plan=plan)
    except OSError as err:
        print(f"error: cannot write into --out {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 — one line instead of a traceback; the records are at fault or we are
        print(f"error: report failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    n_ok = sum(r.ok for r in runs)
    n_bad = sum(r.status == "unreadable" for r in runs)
    print(f"{len(runs)} runs ({n_ok} ok, {len(runs) - n_ok - n_bad} excluded, {n_bad} unreadable) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
