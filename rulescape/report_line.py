"""The short summary a run prints when it ends."""
from __future__ import annotations


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(summary: dict, out_dir) -> None:
    keys = ["train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss", "train_nmse", "test_nmse",
            "lambda_max", "rho_mean"]
    parts = [f"{k}={fmt(summary.get(k))}" for k in keys if summary.get(k) is not None]
    print(f"[{summary['status']}] rule={summary['rule']} task={summary['task']} seed={summary['seed']} "
          f"steps={summary['steps']} {' '.join(parts)} wall={summary['wall_time_s']:.1f}s")
    if summary.get("error"):
        print(f"  error: {summary['error']}")
    print(f"  record: {out_dir}/summary.json")
