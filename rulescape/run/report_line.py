"""The short summary a run prints when it ends: its result line and where its record is.
In a sweep each job prints one line (status, key metrics, record), so that the jobs' lines never interleave."""
from __future__ import annotations

import sys
from pathlib import Path


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def in_sweep() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - no Hydra: a single run
        return False


SCORES = ["train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss", "train_nmse", "test_nmse"]


def last_step(summary: dict, key: str) -> int | None:
    points = (summary.get("history") or {}).get(key) or []
    return points[-1][0] if points and isinstance(points[-1], (list, tuple)) else None


def result_line(summary: dict) -> str:
    """One line: status, run, steps, then the scores of one evaluation. A run that stopped between
    evaluations (interrupted, diverged) names the step its scores are from, and lambda_max its own step when
    it was measured elsewhere, so that no value reads as the state at `steps`."""
    steps = summary["steps"]
    scored_at = next((last_step(summary, k) for k in SCORES if last_step(summary, k) is not None), None)
    parts = [f"{k}={fmt(summary.get(k))}" for k in SCORES if summary.get(k) is not None]
    if summary.get("lambda_max") is not None:
        at = last_step(summary, "lambda_max")
        parts.append(f"lambda_max={fmt(summary['lambda_max'])}" + (f" (step {at})" if at not in (None, scored_at) else ""))
    if summary.get("rho_mean") is not None:
        parts.append(f"rho_mean={fmt(summary['rho_mean'])}")
    where = f" | at step {scored_at}:" if parts and scored_at is not None and scored_at != steps else ""
    return (f"[{summary['status']}] rule={summary['rule']} task={summary['task']} seed={summary['seed']} "
            f"steps={steps}{where} {' '.join(parts)} wall={summary['wall_time_s']:.1f}s")


def print_summary(summary: dict, out_dir) -> None:
    record = Path(out_dir) / "summary.json"
    if in_sweep():  # one write of one line: two jobs' lines never mix
        error = f" error={summary['error']!r}" if summary.get("error") else ""
        sys.stdout.write(f"{result_line(summary)}{error} record={record}\n")
        sys.stdout.flush()
        return
    print(result_line(summary))
    if summary.get("error"):
        print(f"  error: {summary['error']}")
    print(f"  record: {record}", flush=True)
