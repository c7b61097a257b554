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


def result_line(summary: dict) -> str:
    keys = ["train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss", "train_nmse", "test_nmse",
            "lambda_max", "rho_mean"]
    parts = [f"{k}={fmt(summary.get(k))}" for k in keys if summary.get(k) is not None]
    return (f"[{summary['status']}] rule={summary['rule']} task={summary['task']} seed={summary['seed']} "
            f"steps={summary['steps']} {' '.join(parts)} wall={summary['wall_time_s']:.1f}s")


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
