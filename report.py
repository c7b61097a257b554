"""The study's figures and statistics from a sweep's run records:

    python report.py <sweep dir> [<more dirs> ...] [--also <dir>] --out <dir> [--wandb entity/project]

Reads every summary.json below the directories (SPEC section 6), and writes into --out, per task present:
  gap_<task>            final generalization gap per rule over seeds (reference Fig. 2A-C)
  gap_vs_lambda_<task>  final gap vs final lambda_max, one point per run, Pearson/Spearman r (Fig. 2D-F)
  lambda_<task>         lambda_max over training, mean +/- std over seeds (Fig. 3)
  matched_step_<task>   bptt vs eprop vs bptt_scaled (labelled with rho): lambda_max and gaps (Fig. 4C-E)
  rho_theory_<task>     rho over training and Theorem 1's |rho| eta lambda_1 against 1
each as PNG and PDF, and report.md with the per-rule tables, correlations, figure list and excluded runs.
The gap is gap_acc (train - test accuracy) for classification tasks, gap_loss (test - train loss) where a
task has no accuracy. Only runs with status "ok" enter statistics; the others are listed in report.md.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from analysis import figures, markdown
from analysis.load import Run, assign_groups, by_task_group, find_summaries, read_run
from analysis.stats import describe, gap_key, gap_lambda_correlations, stability_history

FIGURE_NOTES = {
    "gap": "generalization gap at the end of training per rule (Fig. 2A-C)",
    "gap_vs_lambda": "final gap vs final lambda_max, one point per run, Pearson/Spearman r (Fig. 2D-F)",
    "lambda": "lambda_max over training, mean ± std over seeds (Fig. 3)",
    "matched_step": "bptt vs eprop vs bptt_scaled: lambda_max over training and final gaps (Fig. 4C-E)",
    "rho_theory": "alignment rho over training and Theorem 1's |rho| eta lambda_max against 1",
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*", help="sweep directories searched recursively for summary.json")
    p.add_argument("--also", action="append", default=[], metavar="DIR", help="another directory to merge in")
    p.add_argument("--out", required=True, help="directory for the figures and report.md")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also pull the runs of a wandb project")
    return p.parse_args(argv)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def task_section(task: str, groups: dict[str, list[Run]], out: Path) -> tuple[list[str], list[str]]:
    """Statistics and figures of one task's ok runs: (report.md lines, figure files written)."""
    runs = [r for rs in groups.values() for r in rs]
    gap = gap_key(runs)
    lines = [f"## Task `{task}`", "",
             f"Gap: `{gap}` = " + ("train_acc − test_acc." if gap == "gap_acc" else "test_loss − train_loss "
                                   "(the task has no accuracy)."), ""]
    perf = ["train_acc", "test_acc"] if gap == "gap_acc" else ["train_loss", "test_loss"]
    columns = perf + [gap, "lambda_max", "rho_mean"]
    stats = {g: (len(rs), {c: describe([r.value(c) for r in rs]) for c in columns}) for g, rs in groups.items()}
    lines += ["### Per rule (ok runs; mean ± std over seeds, std with ddof=1, 0 for a single run)", "",
              markdown.summary_table(stats, columns), ""]

    corr = gap_lambda_correlations(groups, gap)
    lines += [f"### `{gap}` vs final `lambda_max`: correlation", ""]
    if corr["all"].n == 0:
        lines += [f"No ok run of this task has both `{gap}` and `lambda_max`: no correlation.", ""]
    else:
        lines += ["One pair per ok run with both values; r and p from scipy.stats.pearsonr / spearmanr "
                  "(two-sided, asymptotic: rough for a handful of runs); n/a with fewer than 3 runs or a constant "
                  "variable.", "",
                  markdown.correlation_table(corr), ""]

    stability = {g: [stability_history(r) for r in rs] for g, rs in groups.items()}
    theory_rows = []
    for g, hs in stability.items():
        finals = [h[-1][1] for h, _ in hs if h]
        if finals:
            sources = sorted({src for h, src in hs if h})
            below = sum(v < 1 for v in finals)
            theory_rows.append([g, str(len(finals)), markdown.stat_cell(describe(finals), len(finals)),
                                f"{below}/{len(finals)}", "/".join(sources)])
    if theory_rows:
        lines += ["### Theorem 1: final |rho| eta lambda_max (stable fixed point needs < 1)", "",
                  "`recorded`: the run's theory_stability history; `computed`: |rho| × optimizer.lr × the latest "
                  "lambda_max at or before each rho measurement (a learning-rate schedule is not seen).", "",
                  markdown.table(["rule", "n", "final value", "runs below 1", "source"], theory_rows), ""]

    drawn = {
        "gap": (figures.draw_gap_distribution(task, groups, gap), f"no ok run has `{gap}`"),
        "gap_vs_lambda": (figures.draw_gap_vs_lambda(task, groups, gap, corr),
                          f"no ok run has both `lambda_max` and `{gap}`"),
        "lambda": (figures.draw_lambda_trajectories(task, groups), "no ok run has a `lambda_max` history"),
        "matched_step": (figures.draw_matched_step(task, groups, gap),
                         "needs rule bptt_scaled and bptt or eprop in this task"),
        "rho_theory": (figures.draw_rho_theory(task, groups, {g: [h for h, _ in hs] for g, hs in stability.items()}),
                       "no ok run has a `rho` history or a theory_stability / lambda_max history"),
    }
    files, skipped = [], []
    for kind, (fig, why) in drawn.items():
        if fig is None:
            skipped.append(f"- `{kind}_{slug(task)}` skipped: {why}.")
        else:
            files += figures.save(fig, out, f"{kind}_{slug(task)}")
    if skipped:
        lines += ["### Figures skipped", ""] + skipped + [""]
    return lines, files


def build_report(runs: list[Run], out: Path, sources: list[str]) -> Path:
    """Write the figures and report.md for these runs into out; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in runs if r.ok]
    excluded = [r for r in runs if not r.ok]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(count_by(excluded).items()))
    lines = ["# rulescape report", "", "Sources: " + ", ".join(f"`{s}`" for s in sources), "",
             f"{len(runs)} run records: {len(ok)} ok, {len(excluded)} excluded" + (f" ({counts})" if counts else "")
             + ". Statistics and figures use only the ok runs; the excluded runs are listed at the end.", ""]
    files = []
    for task, groups in by_task_group(ok).items():
        section, task_files = task_section(task, groups, out)
        lines += section
        files += task_files
    lines += ["## Figures", ""]
    stems = list(dict.fromkeys(f.rsplit(".", 1)[0] for f in files))
    lines += [f"- `{s}.png`, `{s}.pdf` — {describe_figure(s)}" for s in stems] or ["(none)"]
    lines += ["", f"## Excluded runs ({len(excluded)})", ""]
    lines += [markdown.excluded_table(excluded) if excluded else "None: every run record has status ok.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dirs = list(args.dirs) + list(args.also)
    if not dirs and not args.wandb:
        print("error: give at least one sweep directory (or --wandb entity/project)", file=sys.stderr)
        return 2
    try:
        runs = [read_run(p) for p in find_summaries(dirs)]
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.wandb:
        from analysis.wandb_source import runs_from_wandb
        runs += runs_from_wandb(args.wandb)
    if not runs:
        print(f"error: no summary.json found under {', '.join(dirs)}", file=sys.stderr)
        return 2
    assign_groups(runs)
    sources = dirs + ([f"wandb:{args.wandb}"] if args.wandb else [])
    path = build_report(runs, Path(args.out), sources)
    n_ok = sum(r.ok for r in runs)
    print(f"{len(runs)} runs ({n_ok} ok, {len(runs) - n_ok} excluded) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
