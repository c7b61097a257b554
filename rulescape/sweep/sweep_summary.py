"""The end of a sweep (`train.py -m`): a table of its jobs' records, printed and kept as sweep_summary.txt.

A Hydra callback (registered in conf/config.yaml under `hydra.callbacks`); `on_multirun_end` runs in the
parent process after every job, so it reads every job's summary.json in the sweep directory. Imports
nothing heavy: Hydra builds it before anything else starts.
"""
from __future__ import annotations

import json
import math
import shlex
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback

STATUSES = ("ok", "diverged", "failed", "interrupted")


def mean_std(values: list) -> str:
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return "-"
    scale = max(abs(v) for v in values) or 1.0  # computed on values / scale: 1e308 +- ... never overflows to inf
    scaled = [v / scale for v in values]
    std = statistics.stdev(scaled) * scale if len(values) > 1 else 0.0
    return f"{statistics.fmean(scaled) * scale:.3g} ± {std:.2g}"


def read_records(sweep_dir: Path) -> list[tuple[Path, dict]]:
    records = []
    for path in sorted(sweep_dir.glob("*/summary.json")):
        try:
            if not path.is_file():  # a FIFO would block the read
                raise OSError("not a regular file")
            records.append((path.parent, json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            records.append((path.parent, {"status": "failed", "error": f"unreadable summary.json: {err}"}))
    return records


def read_refused(sweep_dir: Path) -> dict[str, str]:
    """The jobs the launcher did not start in its last launch ({directory name: why}; rulescape/sweep/launcher.py)."""
    path = sweep_dir / "refused.json"
    try:
        refused = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in refused.items()} if isinstance(refused, dict) else {}


def gap_key(records: list[dict]) -> str:
    """gap_acc when the runs have an accuracy, gap_loss otherwise (regression tasks)."""
    return "gap_acc" if any(r.get("gap_acc") is not None for r in records) else "gap_loss"


def summary_table(sweep_dir: Path) -> str:
    """Counts per status, then per rule (and task, if the sweep has several) over its ok runs: mean ± std of
    the gap, the final λ1 and the mean ρ; then the jobs that did not finish ok, with their error."""
    refused = read_refused(sweep_dir)
    # a refused job's directory holds another run's record: it is not this sweep's result
    records = [(d, r) for d, r in read_records(sweep_dir) if d.name not in refused]
    if not records and not refused:
        return f"sweep {sweep_dir}: no job wrote a summary.json"
    counts = {s: sum(r.get("status") == s for _, r in records) for s in STATUSES}
    other = len(records) - sum(counts.values())
    status = ", ".join([f"{n} {s}" for s, n in counts.items() if n] + ([f"{other} other"] if other else [])
                       + ([f"{len(refused)} refused"] if refused else []))
    lines = [f"sweep {sweep_dir}: {len(records) + len(refused)} jobs: {status}"]
    tasks = {r.get("task") for _, r in records}
    groups: dict[tuple, list[dict]] = {}
    for _, r in records:
        groups.setdefault((r.get("rule"), r.get("task")), []).append(r)
    rows = [["rule", *(["task"] if len(tasks) > 1 else []), "ok / jobs", "gap", "lambda_max", "rho_mean"]]
    for (rule, task), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][1]), str(kv[0][0]))):
        ok = [r for r in rs if r.get("status") == "ok"]
        key = gap_key(rs)
        rows.append([str(rule), *([str(task)] if len(tasks) > 1 else []), f"{len(ok)} / {len(rs)}",
                     f"{mean_std([r.get(key) for r in ok])} ({key})",
                     mean_std([r.get("lambda_max") for r in ok]), mean_std([r.get("rho_mean") for r in ok])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [] if not groups else ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for job_dir, r in records:
        if r.get("status") != "ok":
            lines.append(f"  {r.get('status')}: {job_dir.name}" + (f" ({r['error']})" if r.get("error") else ""))
    for name, why in sorted(refused.items()):
        lines.append(f"  refused: {name} (not started; {why})")
    lines.append(f"figures and statistics: python report.py {shlex.quote(str(sweep_dir))} "
                 f"--out {shlex.quote(str(sweep_dir / 'report'))}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Prints the sweep's summary table when all its jobs are done and writes it to sweep_summary.txt."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():  # e.g. --cfg job, or a launcher that ran elsewhere
            return
        table = summary_table(sweep_dir)
        (sweep_dir / "sweep_summary.txt").write_text(table + "\n")
        print(table, flush=True)
