"""The run record, summary.json: its fields (README "The run record"), how it is built and written. Imports
nothing heavy: a sweep's parent process and an interrupted start-up write records too, without torch.

A finished record is never replaced by one that says less: `write_unless_finished` writes only where no
record is, or where the one there says "failed" (a run refused before it started), or where this very
process wrote it."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

STATUSES = ("ok", "diverged", "failed", "interrupted")


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    """The versions that made a record, read without importing torch (a sweep's parent writes records too)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None
    import sys
    torch, pl = sys.modules.get("torch"), sys.modules.get("pytorch_lightning")  # their own spelling (+cu130)
    return {"torch": torch.__version__ if torch else of("torch"),
            "lightning": pl.__version__ if pl else of("pytorch-lightning"), "rulescape": git_commit()}


def last(history: dict, key: str):
    points = history.get(key) or []
    return points[-1][1] if points else None


def finite_mean(history: dict, key: str, default=None):
    """Mean of the finite values of history[key] (`default` when there are none)."""
    values = [v for _, v in history.get(key, []) if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else default


def clean(value):
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


# summary key -> history key (the logged metric name)
FINAL_KEYS = {"train_acc": "train/acc", "test_acc": "test/acc", "gap_acc": "gap/acc",
              "train_loss": "train/loss", "test_loss": "test/loss", "gap_loss": "gap/loss",
              "train_nmse": "train/nmse", "test_nmse": "test/nmse", "lambda_max": "curvature/lambda_max",
              "shift_acc": "shift/acc", "shift_loss": "shift/loss"}


HISTORY_ALIASES = {"curvature/lambda_max": "lambda_max", "align/rho": "rho"}


def history_name(key: str) -> str:
    """Logged key -> summary history name: train/acc -> train_acc, curvature/lambda_max -> lambda_max."""
    return HISTORY_ALIASES.get(key, key.replace("/", "_"))


def build_summary(status: str, config: dict, history: dict, steps: int, wall_time_s: float,
                  error: str | None = None, exact_rule: bool = False, extra: dict | None = None) -> dict:
    """The summary dict from a run's flat history {metric key: [[step, value], ...]}."""
    if status not in STATUSES:
        raise ValueError(f"unknown status '{status}'; choose one of: {', '.join(STATUSES)}")
    summary = {
        "status": status,
        "rule": config.get("rule", {}).get("name"),
        "task": config.get("task", {}).get("name"),
        "seed": config.get("seed"),
        "steps": steps,
        "lr": config.get("optimizer", {}).get("lr"),
    }
    summary.update({k: last(history, h) for k, h in FINAL_KEYS.items()})
    # over the run; an exact rule's estimate is the gradient, so both are 1 when alignment was not measured
    summary["rho_mean"] = finite_mean(history, "align/rho", 1.0 if exact_rule else None)
    summary["norm_ratio_mean"] = finite_mean(history, "align/norm_ratio", 1.0 if exact_rule else None)
    summary.update({"stop_target": None, "stopped_at": None, "warnings": [], "timing": None} | (extra or {}))
    summary["history"] = {history_name(k): v for k, v in history.items()}
    summary.update({"error": error, "wall_time_s": wall_time_s, "versions": versions(), "config": config})
    return clean(summary)


def write_summary(path: Path, summary: dict) -> None:
    """Atomic write: a reader never sees half a file, and a failed write (full disk) leaves the previous
    file and no temporary one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(summary, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_unless_finished(path: Path, summary: dict, keep_written_since_ns: int | None = None) -> bool:
    """Write summary to path unless path holds a record that says more: one written at or after
    keep_written_since_ns (the run's own), or any record that is not "failed". True if written."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if keep_written_since_ns is not None and st.st_mtime_ns >= keep_written_since_ns:
            return False
        try:
            status = json.loads(path.read_text()).get("status") if path.is_file() else "not a file"
        except (OSError, ValueError, AttributeError):
            status = "unreadable"
        if status != "failed":
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_summary(path, summary)
    return True
