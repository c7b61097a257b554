"""Finding and reading run records (summary.json, SPEC section 6) and grouping them for comparison.

A run is grouped by task and by a *group* label: the rule name, plus what distinguishes two variants of one
rule in a sweep (bptt_scaled's rho, tbptt's window) and the learning rate when a task's runs use several.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

# Display order of the rules the study compares (others follow alphabetically).
RULE_ORDER = ("bptt", "eprop", "rflo", "mdgl", "tbptt", "bptt_scaled")


@dataclass
class Run:
    """One run record. `summary` is the parsed summary.json ({} when unreadable); `path` where it came from."""
    path: str
    summary: dict
    status: str
    error: str | None = None
    group: str = ""
    params: dict = field(default_factory=dict)  # what the group label shows beyond the rule, e.g. {"rho": 0.1}

    @property
    def rule(self) -> str:
        return str(self.summary.get("rule") or "unknown")

    @property
    def task(self) -> str:
        return str(self.summary.get("task") or "unknown")

    @property
    def seed(self):
        return self.summary.get("seed")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, key: str) -> float | None:
        """A final scalar (train_acc, gap_loss, lambda_max, ...) as float, or None when missing or not finite."""
        return finite(self.summary.get(key))

    def config(self, dotted: str):
        """A value of the resolved config by dotted key (`rule.rho`), or None."""
        node = self.summary.get("config") or {}
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def lr(self) -> float | None:
        lr = finite(self.summary.get("lr"))
        return lr if lr is not None else finite(self.config("optimizer.lr"))

    @property
    def rho_scale(self) -> float | None:
        """bptt_scaled's step-length factor: config rule.rho, else (rule.rho_from was used) the measured rho_mean."""
        rho = finite(self.config("rule.rho"))
        return rho if rho is not None else self.value("rho_mean")

    def history(self, key: str) -> list[tuple[float, float]]:
        """history[key] as (step, value) pairs with missing / non-finite values dropped, sorted by step."""
        points = (self.summary.get("history") or {}).get(key) or []
        out = []
        for point in points:
            if isinstance(point, (list, tuple)) and len(point) == 2:
                step, v = finite(point[0]), finite(point[1])
                if step is not None and v is not None:
                    out.append((step, v))
        return sorted(out)


def finite(value) -> float | None:
    """float(value) when it is a finite number, else None (JSON null, strings, NaN, bools)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summaries_under(folder: Path) -> list[Path]:
    """Every summary.json under a directory, following symlinked directories (a run linked into a sweep
    folder counts; Path.rglob skips such links) and entering each real directory once (no link loops)."""
    out, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        if "summary.json" in files:
            out.append(Path(root) / "summary.json")
    return sorted(out)


def find_summaries(dirs: list[str | Path]) -> list[Path]:
    """Every summary.json under the given directories (recursively, symlinked run directories included),
    each file once, in path order."""
    found: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"no such directory: {d}")
        paths = [d] if d.is_file() and d.name == "summary.json" else summaries_under(d)
        for p in paths:
            found.setdefault(p.resolve(), None)
    return sorted(found)


# summary.json field -> the types it may have (None always allowed); a record with another type is unreadable
FIELD_TYPES = {"status": (str,), "rule": (str,), "task": (str,), "error": (str,), "history": (dict,),
               "config": (dict,), "versions": (dict,), "seed": (int,), "steps": (int,),
               "lr": (int, float), "wall_time_s": (int, float), "rho_mean": (int, float),
               "train_acc": (int, float), "test_acc": (int, float), "gap_acc": (int, float),
               "train_loss": (int, float), "test_loss": (int, float), "gap_loss": (int, float),
               "train_nmse": (int, float), "test_nmse": (int, float), "lambda_max": (int, float)}


def malformed_field(summary: dict) -> str | None:
    """The first field whose value has the wrong type, described, or None."""
    for key, types in FIELD_TYPES.items():
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"field {key!r} is {type(value).__name__} {str(value)[:40]!r}, not {'/'.join(t.__name__ for t in types)}"
    history = summary.get("history") or {}
    for key, points in history.items():
        if not isinstance(points, list):
            return f"history[{key!r}] is not a list"
    return None


def read_run(path: Path) -> Run:
    """A Run from one summary.json; a file that cannot be parsed, or whose fields have the wrong types,
    becomes status "unreadable" (never dropped, never a traceback)."""
    try:
        if not Path(path).is_file():  # a FIFO or a device named summary.json would block or never end
            raise OSError("not a regular file")
        summary = json.loads(Path(path).read_text())
        if not isinstance(summary, dict):
            raise ValueError("top level is not an object")
        problem = malformed_field(summary)
        if problem:
            raise ValueError(problem)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as err:
        return Run(path=str(path), summary={}, status="unreadable", error=f"{type(err).__name__}: {err}")
    return Run(path=str(path), summary=summary, status=str(summary.get("status") or "unknown"),
               error=summary.get("error"))


def load_runs(dirs: list[str | Path]) -> list[Run]:
    """All runs under the directories, grouped (see assign_groups)."""
    runs = [read_run(p) for p in find_summaries(dirs)]
    assign_groups(runs)
    return runs


def fmt_param(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def assign_groups(runs: list[Run]) -> None:
    """Set run.group / run.params: rule name plus rho (bptt_scaled), window (tbptt), and lr when a task's
    ok runs were trained with more than one learning rate (then same-rule runs at different lr are not pooled;
    failed runs with a rejected lr do not count)."""
    lrs_by_task: dict[str, set] = {}
    for r in runs:
        lrs_by_task.setdefault(r.task, set())
        if r.ok:
            lrs_by_task[r.task].add(r.lr)
    for r in runs:
        params = {}
        if r.rule == "bptt_scaled":
            params["rho"] = r.rho_scale
        if r.rule == "tbptt" and r.config("rule.window") is not None:
            params["window"] = r.config("rule.window")
        if len(lrs_by_task[r.task]) > 1:
            params["lr"] = r.lr
        r.params = params
        r.group = r.rule + ("" if not params else
                            " (" + ", ".join(f"{k}={fmt_param(v)}" for k, v in params.items()) + ")")


def group_order(groups) -> list[str]:
    """Groups sorted as the study shows them: bptt first, the bio-plausible rules, then controls."""
    def key(g: str):
        rule = g.split(" ")[0]
        rank = RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)
        return (rank, rule, g)
    return sorted(set(groups), key=key)


def seed_key(run: Run):
    seed = finite(run.seed)
    return (seed is None, seed if seed is not None else 0.0, run.path)


def by_task_group(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """{task: {group: [runs]}} with groups in display order and runs by seed."""
    out: dict[str, dict[str, list[Run]]] = {}
    for task in sorted({r.task for r in runs}):
        in_task = [r for r in runs if r.task == task]
        out[task] = {g: sorted((r for r in in_task if r.group == g), key=seed_key)
                     for g in group_order(r.group for r in in_task)}
    return out
