"""report.md pieces: markdown tables of the numbers computed in analysis.stats. Numbers are printed with 4
significant digits (enough to check them against scipy); undefined values print as "n/a"."""
from __future__ import annotations

import math

from analysis.stats import Correlation, Stat


def num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def stat_cell(s: Stat, n_ok: int) -> str:
    """"mean ± std", with the count when fewer runs than the group's ok runs have the value."""
    if s.n == 0:
        return "n/a"
    cell = f"{num(s.mean)} ± {num(s.std)}"
    return cell + (f" (n={s.n})" if s.n != n_ok else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(text) -> str:
    """A table cell: one line, no column separators, at most 200 characters."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= 200 else text[:197] + "..."


def summary_table(stats: dict[str, tuple[int, dict[str, Stat]]], columns: list[str]) -> str:
    """Per group: n ok runs and mean ± std of each column (stats: {group: (n ok, {column: Stat})})."""
    rows = [[g, str(n)] + [stat_cell(s[c], n) for c in columns] for g, (n, s) in stats.items()]
    return table(["rule", "n ok"] + columns, rows)


def correlation_table(corr: dict[str, Correlation]) -> str:
    """One row per run set ("all" pooled, then each group): n, Pearson r and p, Spearman r and p."""
    rows = [[("all runs (pooled)" if g == "all" else g), str(c.n), num(c.pearson_r), num(c.pearson_p),
             num(c.spearman_r), num(c.spearman_p)] for g, c in corr.items()]
    return table(["runs", "n", "Pearson r", "Pearson p", "Spearman r", "Spearman p"], rows)
